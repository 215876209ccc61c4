"""The ReAct agent: the tolerant parser on real messy replies, the loop against a scripted model, the tools, the
trace, and one real multi-step question through `mastery agent run` with the embedded LLM."""

import json
import threading
import time

import pytest

from mastery.agents.parsing import ParseError, parse_reply
from mastery.agents.react import ReActAgent
from mastery.agents.tools import calculate, calculator_tool, call_tool, default_tools, format_hits, kb_search_tool
from mastery.agents.trace import render_json, render_markdown, render_text
from mastery.agents.types import AgentError, Tool, ToolError
from mastery.core.errors import ConfigError
from mastery.llm.errors import LLMBadResponse, LLMServerDown
from mastery.llm.fake import ScriptedChat, in_order
from mastery.retrieval.types import Hit
from tests import llm_server as shared
from tests.llm_server import needs_llm

llm_server = shared.llm_server

TOOLS = [calculator_tool(), Tool("kb_search", "search", {"type": "object", "properties": {
    "query": {"type": "string"}, "k": {"type": "integer"}}, "required": ["query"]}, lambda a: f"hits for {a['query']}")]


# -- parser: replies as Qwen2.5-Coder-0.5B and friends wrote them ---------------------------------------------------
@pytest.mark.parametrize("text, action, args", [
    ('Thought: I need to compute 17 * 23 + 5.\nAction: calculator\nAction Input: {"expression": "17 * 23 + 5"}',
     "calculator", {"expression": "17 * 23 + 5"}),
    ('**Thought:** search it\n**Action:** `kb_search`\n**Action Input:** PowerShell', "kb_search",
     {"query": "PowerShell"}),
    ("thought: x\naction: Calculator\naction input: 2 + 2", "calculator", {"expression": "2 + 2"}),
    ("Thought: x\nAction: calculator[3 * 4]", "calculator", {"expression": "3 * 4"}),
    ("Thought: x\nAction: kb_search(LSASS memory)", "kb_search", {"query": "LSASS memory"}),
    ('```\nThought: x\nAction: KB Search\nAction Input: {"query": "T1059", "k": 2}\n```', "kb_search",
     {"query": "T1059", "k": 2}),
    ('Thought: x\nAction: calculator\nAction Input: "12 / 4"', "calculator", {"expression": "12 / 4"}),
    ('Thought: x\nAction: calculator\nAction Input: {"expression": "1+1"}\nObservation: 2\nFinal Answer: 2',
     "calculator", {"expression": "1+1"}),  # an imagined observation and answer after the call are ignored
])
def test_parser_reads_react_variants(text, action, args):
    parsed = parse_reply(text, TOOLS)
    assert (parsed.kind, parsed.action, parsed.action_input, parsed.via) == ("action", action, args, "react")


@pytest.mark.parametrize("text, action, args", [
    ('{"name": "calculator", "arguments": {"expression": "17 * 23 + 5"}}', "calculator",
     {"expression": "17 * 23 + 5"}),
    ('{"name": "calculator", "arguments": {"expression": "396"}}\n{"name": "python", "arguments": {"code": "x"}}',
     "calculator", {"expression": "396"}),  # the model's habit: several calls in one reply; the first counts
    ('I will search.\n```json\n{"action": "kb_search", "action_input": "PowerShell"}\n```', "kb_search",
     {"query": "PowerShell"}),
    ('{"tool_calls": [{"function": {"name": "calculator", "arguments": "{\\"expression\\": \\"2*3\\"}"}}]}',
     "calculator", {"expression": "2*3"}),
    ('{"tool": "kb_search", "tool_input": {"query": "scheduled task"}}', "kb_search", {"query": "scheduled task"}),
])
def test_parser_json_fallback(text, action, args):
    parsed = parse_reply(text, TOOLS)
    assert (parsed.kind, parsed.action, parsed.action_input, parsed.via) == ("action", action, args, "json")


@pytest.mark.parametrize("text, answer", [
    ("Thought: I know the answer\nFinal Answer: 396", "396"),
    ("**Final Answer:** T1059.001", "T1059.001"),
    ("final answer: 1. T1003.001 OS Credential Dumping\nThought: done", "1. T1003.001 OS Credential Dumping"),
    ('{"action": "Final Answer", "action_input": "552"}', "552"),
    ("Thought: I know it\nAction: Final Answer\nAction Input: 42", "42"),
])
def test_parser_final_answers(text, answer):
    parsed = parse_reply(text, TOOLS)
    assert parsed.kind == "final" and parsed.answer == answer


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("The technique is probably PowerShell, let me look.", "does not use the format"),
    ("Thought: I should compute it", "no 'Action:' line and no 'Final Answer:'"),
    ("Thought: x\nAction: calculator", "has no 'Action Input:'"),
    ("Final Answer:", "'Final Answer:' is empty"),
    ('{"name": "Alice", "age": 3}', "does not use the format"),  # JSON data, not a call
])
def test_parser_errors_say_what_is_wrong(text, message):
    with pytest.raises(ParseError, match=message):
        parse_reply(text, TOOLS)


# -- tools ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, value", [("17 * 23 + 5", "396"), ("(123 + 456) * 7 / 3", "1351"), ("10 / 4", "2.5"),
                                         ("2^10 - sqrt(81)", "1015"), ("-2**2", "-4"), ("7 // 2 + 7 % 2", "4"),
                                         ("round(2 * pi, 3)", "6.283"), ("max(3, abs(-8), 5)", "8"), ("3 x 4", "12")])
def test_calculator(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize("expr, message", [("__import__('os').system('true')", "unknown name|unsupported"),
                                           ("9 ** 9 ** 9", "exponent"), ("1 / 0", "division by zero"),
                                           ("3.5GB / 250MB", "not an arithmetic expression"),
                                           ("sqrt(-1)", "math domain error"), ("x + 1", "unknown name 'x'"),
                                           ("(2 ** 1000) ** 1000", "exponent|too large")])
def test_calculator_refuses(expr, message):
    with pytest.raises(ToolError, match=message):
        calculate(expr)


def test_call_tool_repairs_arguments_and_enforces_the_timeout():
    calc = calculator_tool()
    assert call_tool(calc, {"query": "2 + 2"}) == "4"  # one argument under the wrong name
    assert call_tool(calc, {"expression": "2 + 2", "required": ["expression"]}) == "4"  # extra keys dropped
    with pytest.raises(ToolError, match="needs the argument"):
        call_tool(calc, {})
    release = threading.Event()
    stuck = Tool("stuck", "never returns", {"type": "object", "properties": {}}, lambda a: str(release.wait(5)),
                 timeout_s=0.05)
    started = time.perf_counter()
    with pytest.raises(ToolError, match=r"did not finish within 0\.05s"):
        call_tool(stuck, {})
    release.set()
    assert time.perf_counter() - started < 2
    with pytest.raises(ToolError, match="failed: ValueError"):
        call_tool(Tool("bad", "raises", {"type": "object", "properties": {}}, lambda a: int("x")), {})


def test_kb_search_formats_hits_and_default_tools():
    class Retriever:
        def search(self, query, k):
            return [Hit(id="attack:T1059.001", text="T1059.001 PowerShell\n" + "Adversaries abuse PowerShell. " * 20,
                        score=1.0, rank=1, metadata={"technique_id": "T1059.001", "name": "PowerShell"})][:k]

    out = call_tool(kb_search_tool(Retriever()), {"query": "powershell"})
    assert out.startswith("1. T1059.001 PowerShell: Adversaries") and out.endswith("...") and len(out) < 220
    assert format_hits([]) == "no results; try other keywords"
    assert [t.name for t in default_tools()] == ["calculator", "kb_search", "python"]
    with pytest.raises(ConfigError, match="unknown tool"):
        default_tools(["calculator", "shell"])


# -- the loop, against a scripted model -----------------------------------------------------------------------------
def scripted(*replies, on_call=None) -> ScriptedChat:
    """The one fake, replying in call order (the last reply repeats); a dict reply is a native tool call."""
    order = in_order(*({"content": "", "tool_calls": [r]} if isinstance(r, dict) else r for r in replies))

    def respond(messages, system):
        if on_call:
            on_call()
        return order(messages, system)

    return ScriptedChat(respond)


def _tokens(model: ScriptedChat) -> tuple[list[int], list[int]]:
    """The prompt and completion tokens of each call the fake answered."""
    done = [c["completion"] for c in model.calls if "completion" in c]
    return [c.prompt_tokens for c in done], [c.completion_tokens for c in done]


def _agent(model, **kw):
    return ReActAgent(model, [calculator_tool(), TOOLS[1]], **kw)


def test_text_mode_two_step_chain_keeps_a_full_trace():
    model = scripted('Thought: first 48 * 9\nAction: calculator\nAction Input: {"expression": "48 * 9"}',
                     ' now add 120\nAction: calculator\nAction Input: {"expression": "432 + 120"}',
                     " I know the answer\nFinal Answer: 552")
    seen = []
    agent = _agent(model, mode="text", on_step=seen.append)
    result = agent.run("48 hosts per hour for 9 hours, plus 120?")
    assert result.status == "answered" and result.answer == "552"
    assert [s.kind for s in result.steps] == ["tool", "tool", "final"] and seen == result.steps
    assert [s.observation for s in result.steps[:2]] == ["432", "552"]
    assert result.steps[1].thought == "now add 120"
    prompt, completion = _tokens(model)
    assert [s.prompt_tokens for s in result.steps] == prompt and min(prompt) > 0  # each step its own call's
    assert [s.completion_tokens for s in result.steps] == completion and min(completion) > 0
    assert result.prompt_tokens == sum(prompt) and result.completion_tokens == sum(completion)
    # the scratchpad goes back as the assistant's prefill, ending on "Thought:", and generation stops there
    last = model.calls[-1]
    assert last["messages"][-1]["role"] == "assistant" and last["messages"][-1]["content"].endswith("Thought:")
    assert "Observation: 432\nThought: now add 120" in last["messages"][-1]["content"]
    assert last["stop"][0] == "Observation:" and not last["tools"]


def test_format_retry_recovers_and_counts():
    model = scripted("I think it is 4.", "Thought: x\nAction: calculator\nAction Input: 2 + 2", "Final Answer: 4")
    agent = _agent(model, mode="text")
    result = agent.run("2 + 2?")
    assert result.status == "answered" and result.steps[0].attempts == 2
    assert "Reply in this format" in model.calls[1]["messages"][0]["content"]  # the reminder
    assert agent.stats.format_errors == 1 and agent.stats.recovered_by_retry == 1


def test_two_failed_steps_give_up_with_a_reason():
    agent = _agent(scripted("no idea"), mode="text")
    result = agent.run("2 + 2?")
    assert result.status == "gave_up" and "did not follow the format" in result.reason
    assert [s.kind for s in result.steps] == ["format_error", "give_up"] and agent.stats.llm_calls == 4


def test_json_fallback_in_native_mode_and_plain_text_answer():
    model = scripted('{"name": "calculator", "arguments": {"expression": "6 * 7"}}', "The answer is 42.")
    agent = _agent(model, mode="native")
    result = agent.run("6 * 7?")
    assert result.status == "answered" and result.answer == "The answer is 42."
    assert agent.stats.json_fallback == 1 and agent.stats.native_calls == 0
    assert model.calls[0]["tools"][0]["function"]["name"] == "calculator"
    assert "The calculator tool returned: 42" in model.calls[1]["messages"][-1]["content"]


def test_broken_json_call_in_native_mode_is_a_format_error_not_the_answer():
    model = scripted('```json\n{"name": "python", "arguments": {"code": """print(1)"""}}\n```', "1")
    agent = _agent(model, mode="native")
    result = agent.run("print 1")
    assert result.status == "answered" and result.answer == "1" and result.steps[0].attempts == 2
    assert agent.stats.format_errors == 1 and "not valid JSON" in model.calls[1]["messages"][-1]["content"]


def test_native_tool_calls_use_tool_messages():
    model = scripted({"name": "calculator", "arguments": '{"expression": "6 * 7"}'}, "42")
    agent = _agent(model, mode="native")
    result = agent.run("6 * 7?")
    assert result.answer == "42" and result.steps[0].native and agent.stats.native_calls == 1
    assert [m["role"] for m in model.calls[1]["messages"]] == ["user", "assistant", "tool"]


def test_auto_mode_falls_back_to_text_when_tools_are_refused():
    model = scripted(LLMBadResponse("HTTP 400: tools not supported"), "Final Answer: 4")
    agent = _agent(model, mode="auto")
    result = agent.run("2 + 2?")
    assert result.status == "answered" and agent.stats.mode_used == "text" and agent.stats.notes
    with pytest.raises(AgentError, match="mode must be"):
        _agent(model, mode="magic")


def test_unknown_tool_and_tool_errors_become_observations():
    model = scripted("Thought: x\nAction: web_browser\nAction Input: {\"url\": \"x\"}",
                     "Thought: x\nAction: calculator\nAction Input: 1 / 0", "Final Answer: undefined")
    result = _agent(model, mode="text").run("1 / 0?")
    assert [s.kind for s in result.steps] == ["tool_error", "tool_error", "final"]
    assert "no tool 'web_browser'" in result.steps[0].observation
    assert result.steps[1].observation == "Error: division by zero"


def test_loop_breaker_nudges_then_gives_up():
    call = 'Thought: x\nAction: calculator\nAction Input: {"expression": "17 * 23 + 5"}'
    result = _agent(scripted(call), mode="text").run("17 * 23 + 5?")
    assert [s.kind for s in result.steps] == ["tool", "tool_error", "give_up"]
    assert "already called calculator" in result.steps[1].observation
    assert result.status == "gave_up" and result.reason.startswith("loop:")


def test_echo_of_the_last_result_counts_as_a_repeat_and_withdraws_tools_in_native_mode():
    model = scripted('{"name": "calculator", "arguments": {"expression": "17 * 23 + 5"}}',
                     '{"name": "calculator", "arguments": {"expression": "396"}}', "396")
    result = _agent(model, mode="native").run("17 * 23 + 5?")
    assert result.status == "answered" and result.answer == "396"
    ask = model.calls[2]["messages"]
    assert not model.calls[2]["tools"] and len(ask) == 1 and "Reply with just the answer" in ask[0]["content"]
    assert 'calculator({"expression": "17 * 23 + 5"}) returned: 396' in ask[0]["content"]


def test_max_steps():
    replies = [f'Thought: x\nAction: calculator\nAction Input: {{"expression": "{i} + 1"}}' for i in range(10)]
    result = _agent(scripted(*replies), mode="text", max_steps=3).run("count")
    assert result.status == "max_steps" and len(result.steps) == 3 and "after 3 steps" in result.reason


def test_deadline_stops_the_run(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    call = 'Thought: x\nAction: calculator\nAction Input: {{"expression": "{} + 1"}}'
    model = scripted(call.format(1), call.format(2), call.format(3),
                     on_call=lambda: clock.__setitem__(0, clock[0] + 10))
    result = _agent(model, mode="text").run("count", deadline=15.0)
    assert result.status == "timed_out" and len(result.steps) == 2 and "deadline" in result.reason


def test_llm_failure_ends_as_failed():
    result = _agent(scripted(LLMServerDown("no LLM server answers")), mode="text").run("2 + 2?")
    assert result.status == "failed" and "LLMServerDown" in result.reason


def test_tool_timeout_is_an_observation():
    release = threading.Event()
    slow = Tool("slow", "hangs", {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
                lambda a: str(release.wait(5)), timeout_s=0.05)
    model = scripted("Thought: x\nAction: slow\nAction Input: go", "Final Answer: it timed out")
    result = ReActAgent(model, [slow], mode="text").run("try the slow tool")
    release.set()
    assert result.steps[0].kind == "tool_error" and "did not finish within 0.05s" in result.steps[0].observation
    assert result.status == "answered"


def test_trace_renderings():
    model = scripted('Thought: compute\nAction: calculator\nAction Input: {"expression": "6 * 7"}', "Final Answer: 42")
    result = _agent(model, mode="text").run("6 * 7?")
    text = render_text(result)
    assert "Action: calculator" in text and "Observation: 42" in text and "Final Answer: 42" in text
    prompt, completion = _tokens(model)
    assert text.splitlines()[-1].startswith(f"answered: 2 step(s), {sum(prompt)}+{sum(completion)} tokens")
    assert "```text" in render_markdown(result) and "**answered**" in render_markdown(result)
    data = json.loads(render_json(result, mode_used="text"))
    assert data["steps"][0]["observation"] == "42" and data["prompt_tokens"] == sum(prompt)
    assert data["mode_used"] == "text"


# -- the real thing -------------------------------------------------------------------------------------------------
@needs_llm
def test_cli_answers_a_multi_step_question_with_the_embedded_llm(llm_server, capsys):
    from mastery.cli import main

    question = "A team scans 48 hosts per hour. First compute how many hosts it scans in 9 hours, then add 120."
    code = main(["agent", "run", question, "--llm-url", llm_server.url, "--tools", "calculator", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "answered" and "552" in out["answer"]
    calls = [(s["action"], s["action_input"], s["observation"]) for s in out["steps"] if s["action"]]
    assert len(calls) >= 2 and calls[0][2] == "432" and calls[-1][2] == "552"  # two calculator steps, chained
    assert all(s["prompt_tokens"] > 0 and s["llm_latency_s"] > 0 for s in out["steps"])
    assert main(["agent", "run", question, "--tools", "shell"]) == 2  # bad input
