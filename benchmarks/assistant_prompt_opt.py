"""Prompt optimisation of the Research Assistant, measured with the real LLM: answer latency before and after each
change (llama.cpp's prompt cache with a stable prefix, fewer and shorter passages, a shorter template), each on its
own and all together, as ratios to the baseline, with key-fact correctness on the evaluation set beside it.
See mastery.apps.assistant.prompt_opt for what each change is and how it is measured.

The knowledge base: the registered PDFs as the ingest reads them, kept in <cache>/benchmarks/assistant-prompt-opt-kb
(embedded once: a few minutes of MiniLM on the CPU the first time), searched as the assistant does (hybrid, with the
re-ranker when one was measured). The LLM: one embedded llama.cpp server per variant with --model (default the 0.5B;
the record uses the 1.5B), so no variant finds another's prompts in the cache; or --llm-url for one server already
running (llama.cpp's, for the cache counts; shared by every variant, which flatters the cached ones).

Prints one line per answer, the ratio table and the JSON, also written to --json-out.
Usage: python benchmarks/assistant_prompt_opt.py [--questions 6] [--model qwen2.5-coder-1.5b-instruct-q4_k_m]
                                                 [--variants baseline,prompt_cache,...] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from typing import Any

from _table import emit_json, print_table
from mastery.apps.assistant.prompt_opt import (
    PDF_DOCUMENTS,
    VARIANTS,
    measure,
    pdf_knowledge_base,
    ratio_table,
    sample_questions,
    variant_servers,
)
from mastery.llm.settings import EMBEDDED_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=6, help="how many evaluation questions (default 6)")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="registry GGUF for the embedded server")
    parser.add_argument("--llm-url", default=None, help="a running llama.cpp server (…/v1) instead")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default MASTERY_THREADS)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, baseline first")
    parser.add_argument("--kb-dir", default=None, help="knowledge-base folder (default under the cache)")
    parser.add_argument("--json-out", default="docs/results/assistant_prompt_opt.json")
    args = parser.parse_args()

    from mastery.apps.assistant.graph import open_kb_retriever
    from mastery.core.settings import get_settings
    from mastery.llm.client import LLMClient
    from mastery.llm.settings import load_settings

    questions = sample_questions(args.questions)
    documents = sorted({q.source for q in questions if q.source} & set(PDF_DOCUMENTS)) or list(PDF_DOCUMENTS)
    kb_dir = args.kb_dir or get_settings().cache / "benchmarks" / "assistant-prompt-opt-kb"
    start = time.perf_counter()
    kb = pdf_knowledge_base(kb_dir, documents)
    retriever = open_kb_retriever(kb, "docs")
    kb_s = time.perf_counter() - start
    threads = args.threads or get_settings().threads
    variants = args.variants.split(",")
    with contextlib.ExitStack() as stack:
        if args.llm_url:
            llm: Any = LLMClient(load_settings(backend="openai", base_url=args.llm_url, model=args.model,
                                               timeout_s=600.0))
            llm.chat("Say OK.", max_tokens=4)  # the first call pays for warming up: not the baseline's
        else:
            llm = stack.enter_context(variant_servers(args.model, variants, threads))
        result = measure(llm, retriever, questions, variants,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    report = {"schema": 1, "machine": platform.machine(), "python": platform.python_version(),
              "threads": threads, "kb_seconds": round(kb_s, 1), "documents": documents,
              "retriever": getattr(retriever, "name", "?"), **result,
              "table": ratio_table(result)}
    print_table(report["table"])
    emit_json(report, args.json_out)


if __name__ == "__main__":
    main()
