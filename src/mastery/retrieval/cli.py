"""``mastery kb ...``: ingest files and the ATT&CK corpus into the knowledge base, query it, show stats.

:func:`register` only builds parsers; chromadb and the embedding model load when a command runs.
The store is ``--chroma-url`` / ``$MASTERY_CHROMA_URL`` (a ``chroma run`` server) when given, else the
folder ``--kb-dir`` / ``$MASTERY_KB_DIR`` (default ``~/.cache/mastery/kb``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from mastery.core.errors import MasteryError
from mastery.retrieval.types import RETRIEVAL_KINDS

_CONDITION = re.compile(r"^(?P<key>[A-Za-z_][\w.-]*)\s*(?P<op>~=|!=|>=|<=|=)\s*(?P<value>.*)$")
_OPS = {"!=": "$ne", ">=": "$gte", "<=": "$lte", "~=": "$contains"}


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_where(conditions: list[str] | None, where_json: str | None = None) -> dict[str, Any] | None:
    """``["source=a.pdf", "page>=3", "tactics_list~=persistence"]`` -> a Chroma where filter ($and of all)."""
    clauses: list[dict[str, Any]] = []
    for cond in conditions or []:
        m = _CONDITION.match(cond.strip())
        if not m or not m["value"]:
            raise MasteryError(f"bad --where {cond!r}: use key=value, key!=value, key>=n, key<=n or key~=item "
                               "(list contains), e.g. source=guide.pdf")
        value = m["value"] if m["op"] == "~=" else _value(m["value"])
        clauses.append({m["key"]: value} if m["op"] == "=" else {m["key"]: {_OPS[m["op"]]: value}})
    if where_json:
        try:
            extra = json.loads(where_json)
        except ValueError as exc:
            raise MasteryError(f"--where-json is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise MasteryError("--where-json must be a JSON object, e.g. '{\"page\": {\"$gte\": 3}}'")
        clauses.append(extra)
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _open(args: argparse.Namespace):  # -> KnowledgeBase
    from mastery.retrieval.kb import KnowledgeBase, SentenceEmbedder

    return KnowledgeBase.open(args.chroma_url or args.kb_dir, SentenceEmbedder(device=args.device))


def _report_ingest(result: Any, collection: str, location: str) -> None:
    repaired = f", {result.repaired} repaired" if getattr(result, "repaired", 0) else ""
    _out(f"{collection}: {result.added} added, {result.replaced} replaced{repaired}, {result.unchanged} unchanged; "
         f"{result.chunks} chunks written, {result.deleted_chunks} old chunks removed "
         f"(embed {result.embed_seconds:.1f}s) in {location}")
    if getattr(result, "interrupted", False):
        _out(f"  repaired an interrupted ingest: {result.resumed_chunks} of its chunks kept, "
             f"{result.cleaned_chunks} leftover chunks removed")
    for skipped in result.skipped:
        _out(f"  skipped {skipped}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from mastery.core.progress import BarProgress, NullProgress

    kb = _open(args)
    progress = NullProgress() if args.quiet else BarProgress("kb ingest")
    try:
        result = kb.ingest_files(args.paths, args.collection, args.chunk_size, args.chunk_overlap, args.skip_errors,
                                 max_file_mb=args.max_file_mb, progress=progress)
    finally:
        progress.close()
    _report_ingest(result, args.collection, kb.location)
    return 0


def cmd_ingest_attack(args: argparse.Namespace) -> int:
    from mastery.retrieval.kb import ingest_attack

    kb = _open(args)
    _report_ingest(ingest_attack(kb, args.collection), args.collection, kb.location)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    where = parse_where(args.where, args.where_json)
    kb = _open(args)
    hits = kb.retriever(args.collection, kind=args.retrieval, where=where).search(args.text, args.k)
    if args.json:
        _out(json.dumps([{"rank": h.rank, "score": round(h.score, 4), "id": h.id, "citation": h.citation(),
                          "text": h.text, "metadata": h.metadata} for h in hits], indent=2, default=str))
        return 0
    if not hits:
        _out("no hits" + (f" matching {where}" if where else ""))
    for h in hits:
        snippet = " ".join(h.text.split())
        _out(f"{h.rank:>2}. {h.score:.3f}  [{h.citation()}]  {snippet[:args.width]}"
             f"{'...' if len(snippet) > args.width else ''}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    kb = _open(args)
    stats = kb.stats(args.collection)
    if not stats:
        _out(f"no collections in {kb.location}")
    for s in stats:
        _out(f"{s.name}: {s.chunks} chunks from {s.sources} sources (embedder {s.embedder})")
        if args.collection:
            for row in kb.sources(s.name):
                _out(f"  {row['source']:<40} {row['format']:<8} pages {row['pages']:>4}  chunks {row['chunks']:>5}  "
                     f"sha256 {row['file_hash'][:12]}")
    _out(f"store: {kb.location}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    kb = _open(args)
    n = kb.count(args.collection)
    kb.delete_collection(args.collection)
    _out(f"deleted collection {args.collection} ({n} chunks) from {kb.location}")
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kb-dir", default=None, help="knowledge-base folder (default: $MASTERY_KB_DIR or "
                                                       "~/.cache/mastery/kb)")
    common.add_argument("--chroma-url", default=None, help="a Chroma server, e.g. http://127.0.0.1:8000 "
                                                           "(default: $MASTERY_CHROMA_URL; overrides --kb-dir)")
    common.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where MiniLM embeds")

    kb = subparsers.add_parser("kb", help="knowledge base: ingest PDFs/Markdown/HTML/text and ATT&CK, query, stats")
    sub = kb.add_subparsers(dest="action", required=True, parser_class=parser_class)

    p = sub.add_parser("ingest", parents=[common], help="chunk, embed and store files (re-ingest skips unchanged "
                                                        "files and replaces changed ones)")
    p.add_argument("paths", nargs="+", help="files (.pdf .md .txt .rst .html) or folders to search")
    p.add_argument("--collection", default="docs")
    p.add_argument("--chunk-size", type=int, default=1000, help="characters per chunk")
    p.add_argument("--chunk-overlap", type=int, default=150, help="characters shared by neighbouring chunks")
    p.add_argument("--skip-errors", action="store_true", help="skip unreadable or oversized files instead of "
                                                              "stopping")
    p.add_argument("--max-file-mb", type=float, default=None, help="refuse files larger than this many MB "
                                                                   "(default: $MASTERY_KB_MAX_FILE_MB or 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (chunks embedded/total) on stderr")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("ingest-attack", parents=[common], help="store the MITRE ATT&CK techniques (one document "
                                                               "each, with ID, tactics and link)")
    p.add_argument("--collection", default="attack")
    p.set_defaults(func=cmd_ingest_attack)

    p = sub.add_parser("query", parents=[common], help="search a collection (semantic by default), optionally "
                                                       "filtered by metadata")
    p.add_argument("text")
    p.add_argument("--collection", default="docs")
    p.add_argument("-k", type=int, default=5, help="number of hits")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="metadata filter, repeatable (all must hold): source=a.pdf, page>=3, page!=1, "
                        "tactics_list~=persistence")
    p.add_argument("--where-json", default=None, help="a raw Chroma where filter as JSON")
    p.add_argument("--retrieval", choices=RETRIEVAL_KINDS, default="dense",
                   help="dense (default): MiniLM cosine; bm25: keywords; hybrid: both fused by reciprocal rank; "
                        "hybrid+rerank: the hybrid re-ordered by the registered cross-encoder")
    p.add_argument("--width", type=int, default=160, help="characters of each hit to print")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("stats", parents=[common], help="collections with chunk and source counts")
    p.add_argument("--collection", default=None, help="also list the files of this collection")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("delete", parents=[common], help="delete a collection")
    p.add_argument("collection")
    p.set_defaults(func=cmd_delete)
