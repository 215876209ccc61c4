"""The tools an agent may call, and :func:`call_tool`, the one way to run them.

    tools = default_tools()                        # calculator, kb_search, python
    call_tool(tools[0], {"expression": "2 * (3 + 4)"})   # "14"

Every tool is a :class:`mastery.agents.types.Tool`: a JSON-schema ``parameters`` object (what native function
calling sends) and ``fn(arguments) -> observation``. :func:`call_tool` checks and repairs the arguments first
(small models name them wrongly or send numbers as strings), then runs ``fn`` under ``tool.timeout_s``; any
failure becomes a :class:`ToolError` whose message the agent shows the model as its observation.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mastery.agents.types import Tool, ToolError

# CPython 3.11's ast.parse is not safe to run in two threads at once (SystemError "AST constructor recursion
# depth mismatch", seen when the agent API ran calculators in worker threads): one parse at a time.
_PARSE_LOCK = threading.Lock()

log = logging.getLogger(__name__)

TOOL_NAMES = ("calculator", "kb_search", "python")


# -- running a tool ------------------------------------------------------------------------------
def required_parameters(tool: Tool) -> list[str]:
    return list(tool.parameters.get("required", []))


def coerce_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The arguments as the tool's schema wants them, or a ToolError that says what to send instead.

    Repairs what small models get wrong without changing meaning: a bare value for a one-parameter tool, a
    single argument under the wrong name, numbers written as strings, and extra keys next to the right ones."""
    props: dict[str, Any] = tool.parameters.get("properties", {})
    required = required_parameters(tool)
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        if len(required) != 1:
            raise ToolError(f"{tool.name} needs a JSON object with {', '.join(required) or 'no'} arguments")
        arguments = {required[0]: arguments}
    args = {k: v for k, v in arguments.items() if k in props}
    unknown = [k for k in arguments if k not in props]
    if len(required) == 1 and required[0] not in args and len(unknown) == 1:
        args[required[0]] = arguments[unknown[0]]  # {"query": "2+2"} for the calculator: the name was wrong
    missing = [k for k in required if k not in args or args[k] in (None, "")]
    if missing:
        raise ToolError(f"{tool.name} needs the argument(s) {', '.join(missing)}; "
                        f"send e.g. {{{', '.join(f'{k!r}: ...' for k in required)}}}")
    for key, value in list(args.items()):
        kind = props.get(key, {}).get("type")
        try:
            if kind == "integer" and not isinstance(value, int):
                args[key] = int(float(value))
            elif kind == "number" and not isinstance(value, int | float):
                args[key] = float(value)
            elif kind == "string" and not isinstance(value, str):
                args[key] = str(value)
        except (TypeError, ValueError):
            raise ToolError(f"{tool.name}: argument {key!r} must be a {kind}, got {value!r}") from None
    return args


def call_tool(tool: Tool, arguments: dict[str, Any]) -> str:
    """Run tool.fn under tool.timeout_s (raises ToolError on timeout, bad arguments or failure).

    The function runs in a daemon thread: a Python thread cannot be killed, so a tool that overruns keeps
    running in the background while the agent moves on; tools that can hang (the python tool) therefore
    enforce their own limit in a child process and ``timeout_s`` is only the backstop."""
    args = coerce_arguments(tool, arguments)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = tool.fn(args)
        except BaseException as exc:  # re-raised in the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(tool.timeout_s)
    if worker.is_alive():
        raise ToolError(f"{tool.name} did not finish within {tool.timeout_s:g}s; try a smaller request")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, ToolError):
            raise exc
        raise ToolError(f"{tool.name} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    result = box.get("result")
    return result if isinstance(result, str) else str(result)


# -- calculator: a safe arithmetic evaluator -------------------------------------------------------
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
    "abs": abs, "round": round, "min": min, "max": max, "floor": math.floor, "ceil": math.ceil,
    "sin": math.sin, "cos": math.cos, "tan": math.tan}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000  # 2**1000 is fine; 9**9**9 would hang the process computing a 370-million-digit integer
MAX_INT_BITS = 4096
MAX_EXPRESSION_CHARS = 500


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"result too large (over {MAX_INT_BITS} bits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("result is not a finite number")
    return value


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        args = [_eval(a) for a in node.args]
        try:
            return _check_size(_FUNCTIONS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}{tuple(args)}: {exc}") from None
    if isinstance(node, ast.Name):
        raise ToolError(f"unknown name {node.id!r}: use numbers, + - * / // % ** and "
                        f"{', '.join(sorted(_FUNCTIONS))}")
    raise ToolError(f"unsupported expression part: {ast.unparse(node)[:60]!r}")


def format_number(value: float | int) -> str:
    """Integers as integers (10/2 -> "5"), other floats to 10 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def calculate(expression: str) -> str:
    """Evaluate arithmetic without ``eval``: numbers, + - * / // % ** (^ means power), parentheses, unary
    minus, and a few math functions. Anything else is a ToolError."""
    text = expression.strip().strip("`").strip()
    text = re.sub(r"(?<=\d)\s*[x×]\s*(?=\d)", "*", text).replace("÷", "/")  # "3 x 4" as people write it
    text = text.rstrip("=").strip().replace("^", "**")  # people and models write ^ for power
    if not text:
        raise ToolError("empty expression; send e.g. {\"expression\": \"2 * (3 + 4)\"}")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        with _PARSE_LOCK:
            tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {text[:80]!r}; use only numbers, + - * / ** and "
                        "parentheses, e.g. (2 + 3) * 4 / 5") from None
    return format_number(_eval(tree))


def calculator_tool(timeout_s: float = 5.0) -> Tool:
    return Tool(
        name="calculator",
        description="Evaluate an arithmetic expression, e.g. 2 * (3 + 4) or sqrt(16) / 2. Returns the number.",
        parameters={"type": "object", "properties": {"expression": {
            "type": "string", "description": "the arithmetic expression"}}, "required": ["expression"]},
        fn=lambda args: calculate(args["expression"]), timeout_s=timeout_s)


# -- knowledge-base search -----------------------------------------------------------------------------
_DEFAULT_RETRIEVER: dict[str, Any] = {}
_DEFAULT_LOCK = threading.Lock()


def default_retriever(collection: str = "attack") -> Any:
    """The ATT&CK search every agent shares (:func:`mastery.retrieval.attack.open_attack_search`: the knowledge
    base's ``collection`` when it holds documents, else in memory; hybrid, re-ranked when a cross-encoder is
    registered). Built once per process and reused."""
    from mastery.retrieval.attack import open_attack_search

    with _DEFAULT_LOCK:
        if collection not in _DEFAULT_RETRIEVER:
            _DEFAULT_RETRIEVER[collection] = open_attack_search(collection=collection)
        return _DEFAULT_RETRIEVER[collection]


def format_hits(hits: Sequence[Any], max_chars: int = 160) -> str:
    """A short numbered list: "1. T1059.001 PowerShell: <trimmed text>"."""
    if not hits:
        return "no results; try other keywords"
    lines = []
    for i, hit in enumerate(hits, start=1):
        meta = hit.metadata or {}
        first, _, body = hit.text.partition("\n")
        if meta.get("technique_id"):
            title = f"{meta['technique_id']} {meta.get('name') or first}"
        else:
            title = hit.citation() if hasattr(hit, "citation") else hit.id
            body = hit.text
        body = " ".join(body.split())
        body = body if len(body) <= max_chars else body[: max_chars - 3].rsplit(" ", 1)[0] + "..."
        lines.append(f"{i}. {title}: {body}")
    return "\n".join(lines)


def kb_search_tool(retriever: Any | None = None, *, k: int = 3, timeout_s: float = 60.0,
                   max_chars: int = 160) -> Tool:
    """Search a retriever (a :class:`mastery.retrieval.types.Retriever`); default :func:`default_retriever`,
    built on the first call so that making the tool costs nothing."""

    def search(args: dict[str, Any]) -> str:
        from mastery.core.errors import MasteryError

        n = max(1, min(int(args.get("k") or k), 10))
        try:
            hits = (retriever or default_retriever()).search(args["query"], n)
        except MasteryError as exc:
            raise ToolError(f"kb_search: {exc}") from exc
        return format_hits(hits[:n], max_chars)

    return Tool(
        name="kb_search",
        description="Search the MITRE ATT&CK knowledge base. Returns technique IDs, names and short descriptions.",
        parameters={"type": "object", "properties": {
            "query": {"type": "string", "description": "keywords or a question"},
            "k": {"type": "integer", "description": f"number of results (default {k})"}}, "required": ["query"]},
        fn=search, timeout_s=timeout_s)


# -- python ---------------------------------------------------------------------------------------
def python_tool(*, timeout_s: float = 10.0, memory_mb: int = 256, max_output_chars: int = 2000) -> Tool:
    """Run Python code in a sandboxed child process (:mod:`mastery.agents.sandbox`); the observation is its
    printed output."""

    def run(args: dict[str, Any]) -> str:
        from mastery.agents.sandbox import run_python

        result = run_python(args["code"], timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars)
        return result.stdout.strip() or "(no output: print() the result)"

    return Tool(
        name="python",
        description="Run Python 3 code and return what it prints (use print). No network, no files outside a temp "
                    f"folder, {timeout_s:g}s and {memory_mb} MB limits.",
        parameters={"type": "object", "properties": {"code": {"type": "string", "description": "Python code"}},
                    "required": ["code"]},
        fn=run, timeout_s=timeout_s + 5.0, idempotent=True)


def default_tools(names: Sequence[str] | None = None, *, retriever: Any | None = None,
                  python_timeout_s: float = 10.0, python_memory_mb: int = 256) -> list[Tool]:
    """calculator, kb_search and python (or the ``names`` asked for, in that order)."""
    from mastery.core.errors import ConfigError

    wanted = list(TOOL_NAMES if names is None else names)
    unknown = [n for n in wanted if n not in TOOL_NAMES]
    if unknown or not wanted:
        raise ConfigError(f"unknown tool(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(TOOL_NAMES)}")
    builders: dict[str, Callable[[], Tool]] = {
        "calculator": calculator_tool,
        "kb_search": lambda: kb_search_tool(retriever),
        "python": lambda: python_tool(timeout_s=python_timeout_s, memory_mb=python_memory_mb)}
    return [builders[n]() for n in wanted]
