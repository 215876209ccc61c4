"""``mastery llm serve|chat`` and ``mastery rag ask``.

:func:`register` only builds parsers; xllamacpp, openai and the knowledge base load when a command runs.
Settings come from the MASTERY_LLM_* env vars (see :mod:`mastery.llm.settings`); flags override them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def _out(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def _quiet_http_logs() -> None:
    # httpx/openai log every request at INFO; the client's own llm_call line says what matters
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Any:
    from mastery.llm.settings import load_settings

    return load_settings(backend=args.backend, base_url=args.llm_url, model=args.model, timeout_s=args.timeout,
                         threads=args.threads, ctx=args.ctx)


def _stats_line(completion: Any) -> str:
    speed = completion.generation_tokens_per_s
    ttft = completion.time_to_first_token_s
    return (f"[{completion.model}: {completion.prompt_tokens} prompt + {completion.completion_tokens} completion "
            f"tokens, {completion.latency_s:.2f}s" + (f", first token {ttft:.2f}s" if ttft is not None else "")
            + (f", {speed:.1f} tokens/s" if speed else "") + "]")


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from mastery.llm.client import embedded_alias
    from mastery.llm.server import EmbeddedServer

    _quiet_http_logs()
    # Ctrl+C and `kill` both stop the server cleanly (a shell's background job starts with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = _settings(args)
    # the server answers to the name it serves: clients asking for --model's name must find it in /v1/models
    alias = embedded_alias(settings)
    server = EmbeddedServer(settings.model_name, port=args.port, threads=settings.threads, ctx=settings.ctx,
                            log_path=args.log, alias=alias)
    with server:
        _out(f"llama.cpp server ({settings.model_name}) on {server.device} at {server.url}  (pid {server.pid}, "
             f"log {server.log_path}); Ctrl+C stops it")
        if args.port != _default_port():
            _out(f"point clients at it with: export MASTERY_LLM_BASE_URL={server.url}")
        if alias != _default_model():
            _out(f"and name its model with: export MASTERY_LLM_MODEL={alias}")
        try:
            code = server.wait()
        except KeyboardInterrupt:
            _out("stopping")
            return 0
    return 0 if code in (0, None) else 2


def _default_model() -> str:
    from mastery.llm.settings import EMBEDDED_MODEL

    return EMBEDDED_MODEL


def _default_port() -> int:
    from mastery.llm.settings import EMBEDDED_PORT

    return EMBEDDED_PORT


def cmd_chat(args: argparse.Namespace) -> int:
    from mastery.llm.client import open_client

    _quiet_http_logs()
    with open_client(_settings(args)) as llm:
        kwargs = {"system": args.system, "max_tokens": args.max_tokens, "temperature": args.temperature,
                  "seed": args.seed}
        if args.no_stream:
            completion = llm.chat(args.prompt, **kwargs)
            _out(completion.text)
        else:
            stream = llm.stream(args.prompt, **kwargs)
            for piece in stream:
                _out(piece, end="")
            _out()
            completion = stream.read()
    sys.stderr.write(_stats_line(completion) + "\n")
    return 0


def cmd_rag_ask(args: argparse.Namespace) -> int:
    from mastery.llm.client import open_client
    from mastery.llm.rag import ask, open_knowledge_base

    _quiet_http_logs()
    from mastery.retrieval.cli import parse_where
    from mastery.retrieval.types import check_query

    check_query(args.question, args.k)  # bad input, a bad collection or kind fail before the LLM starts
    kb = open_knowledge_base(args.kb_dir, args.chroma_url, args.device)
    retriever = kb.retriever(args.collection, kind=args.retrieval, where=parse_where(args.where))
    with open_client(_settings(args)) as llm:
        answer = ask(llm, retriever, args.question, k=args.k, max_tokens=args.max_tokens, min_score=args.min_score,
                     min_support=args.min_support, on_text=lambda piece: _out(piece, end=""))
    _out("\n")
    _out(answer.final_text() if answer.declined else "Sources: " + "; ".join(
        f"[{i}] {c}" for i, c in zip(answer.cited, answer.citations, strict=True))
        + (" (attached: the model's own citation was missing or unsupported)" if answer.attached else ""))
    _out("retrieved:")
    for i, hit in enumerate(answer.hits, start=1):
        score = {"dense": "similarity", "bm25": "BM25 score"}.get(args.retrieval, "fused score")
        _out(f"  [{i}] {hit.citation()}  ({score} {hit.score:.3f}, supports {answer.support[i - 1]:.0%} "
             "of the answer)")
    if answer.completion is not None:
        sys.stderr.write(_stats_line(answer.completion) + "\n")
    return 0


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("embedded", "ollama", "openai"), default=None,
                   help="default: MASTERY_LLM_BACKEND, else embedded")
    p.add_argument("--llm-url", default=None,
                   help="the LLM server's OpenAI-compatible base URL ending in /v1 (MASTERY_LLM_BASE_URL)")
    p.add_argument("--model", default=None, help="the LLM: a registry name for the embedded backend, else the "
                                                "server's model name (MASTERY_LLM_MODEL)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per call (MASTERY_LLM_TIMEOUT, default 120)")
    p.add_argument("--threads", type=int, default=None, help="embedded server threads (MASTERY_LLM_THREADS)")
    p.add_argument("--ctx", type=int, default=None, help="embedded context length in tokens (MASTERY_LLM_CTX)")


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    llm = subparsers.add_parser("llm", help="the local LLM: serve llama.cpp, chat with any backend")
    sub = llm.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("serve", help="run llama.cpp's OpenAI-compatible server on 127.0.0.1 until Ctrl+C")
    _add_llm_options(p)
    p.add_argument("--port", type=int, default=_default_port(),
                   help="port (default %(default)s, where chat/rag look first; 0 = any free port)")
    p.add_argument("--log", default=None, help="llama.cpp's log file (default: a temporary file)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="ask the LLM once; the answer streams to stdout, token counts to stderr")
    p.add_argument("prompt")
    _add_llm_options(p)
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    p.set_defaults(func=cmd_chat)

    rag = subparsers.add_parser("rag", help="retrieval-augmented answers from a knowledge-base collection")
    rsub = rag.add_subparsers(dest="action", required=True, parser_class=parser_class)
    p = rsub.add_parser("ask", help="answer from the top-k chunks of a collection, citing them")
    p.add_argument("question")
    p.add_argument("--collection", required=True, help="a collection made by 'mastery kb ingest'")
    p.add_argument("--k", type=int, default=3, help="chunks to retrieve (default 3)")
    p.add_argument("--retrieval", choices=("dense", "bm25", "hybrid", "hybrid+rerank"), default="hybrid",
                   help="hybrid (default): MiniLM and BM25 fused by reciprocal rank; dense: MiniLM only; bm25: "
                        "keywords only; hybrid+rerank: hybrid re-ordered by the registered cross-encoder")
    p.add_argument("--where", action="append", metavar="COND",
                   help="metadata filter as in 'mastery kb query', e.g. source=guide.pdf or page>=3")
    p.add_argument("--min-score", type=float, default=None,
                   help="answer 'I don't know' without the LLM when no chunk scores this high (cosine)")
    p.add_argument("--min-support", type=float, default=0.6,
                   help="share of the answer's words a source must contain to count as its support")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where MiniLM embeds")
    p.add_argument("--kb-dir", default=None, help="knowledge-base folder (default: as 'mastery kb')")
    p.add_argument("--chroma-url", default=None, help="a Chroma server instead of the folder")
    p.add_argument("--max-tokens", type=int, default=256)
    _add_llm_options(p)
    p.set_defaults(func=cmd_rag_ask)
