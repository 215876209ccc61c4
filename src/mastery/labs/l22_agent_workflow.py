"""L22 · Agent workflows: the LangGraph support-bot router. Classify the intent (LLM JSON, one retry, fallback),
retrieve the policy (BM25 + MiniLM over the project's support policies), draft the reply, stop for a person to
approve / edit / reject, send once; SQLite checkpoints, resumed from a new process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device
from mastery.llm.settings import QUALITY_MODEL

HEADLINE = ("intent_accuracy", "fallback_accuracy", "retrieval_hit_rate", "draft_key_fact_rate",
            "draft_cites_gold_policy_rate", "accuracy_when_agree")


REQUIRES: tuple[str, ...] = ()  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # "embedded": the local LLM via llama.cpp (llm_model); "scripted": a fake (tiny)
    llm: Literal["embedded", "scripted"] = "embedded"
    examples: Literal["all", "tiny"] = "all"  # "all": the ~40 labelled messages; "tiny": one per graph path
    # "hybrid": BM25 + MiniLM fused by rank (and the fallback's embedding stage); "bm25"
    retrieval: Literal["hybrid", "bm25"] = "hybrid"
    classify_max_tokens: Annotated[int, Interval(ge=8, le=4096)] = 24
    draft_max_tokens: Annotated[int, Interval(ge=32, le=32_768)] = 140
    # llama.cpp threads (None: MASTERY_LLM_THREADS / MASTERY_THREADS)
    threads: Annotated[int, Interval(ge=1, le=1024)] | None = None
    # the LLM: a registry GGUF for the embedded backend (None: the configured one, MASTERY_LLM_MODEL). Full
    # presets judge answer quality, which the 0.5B model fails where the 1.5B passes.
    llm_model: str | None = None
    device: Device = "auto"  # where MiniLM embeds
    min_intent_accuracy: Fraction = 0.7
    min_retrieval_hit_rate: Fraction = 0.8
    min_draft_key_fact_rate: Fraction = 0.6
    seed: int = 0


PRESETS = {
    "tiny": Config(llm="scripted", examples="tiny", retrieval="bm25", device="cpu"),
    "full": Config(llm_model=QUALITY_MODEL),
}


@contextlib.contextmanager
def _open_llm(config: Config):
    if config.llm == "scripted":
        from mastery.agents.support.scripted import TINY_BEHAVIOUR, keyword_script
        from mastery.llm.fake import ScriptedChat

        yield ScriptedChat(keyword_script(TINY_BEHAVIOUR))
        return
    from mastery.llm.client import open_client
    from mastery.llm.settings import load_settings

    with open_client(load_settings(threads=config.threads, model=config.llm_model)) as llm:
        yield llm


def run(config: Config, progress: Progress) -> Report:
    from mastery.agents.support.dataset import EXAMPLES, TINY_EXAMPLES
    from mastery.agents.support.graph import BotSettings, SupportBot, SupportDeps
    from mastery.core.labs import new_report

    report = new_report("l22", config)
    examples = TINY_EXAMPLES if config.examples == "tiny" else EXAMPLES
    device = "cpu"
    if config.retrieval == "hybrid":
        from mastery.core.runtime import torch_device

        device = torch_device(config.device)
    settings = BotSettings(classify_max_tokens=config.classify_max_tokens, draft_max_tokens=config.draft_max_tokens,
                           retrieval=config.retrieval, device=device, seed=config.seed)
    with tempfile.TemporaryDirectory(prefix="l22-") as tmp, _open_llm(config) as llm:
        db, outbox = Path(tmp) / "support.sqlite", Path(tmp) / "support.outbox.jsonl"
        minilm = device if config.retrieval == "hybrid" else "not used"
        report.device = f"LLM: {llm.model} via {llm.device}; MiniLM: {minilm}"
        if getattr(llm, "server", None) is not None:
            report.timing("llm_server_load_seconds", llm.server.load_seconds)
        deps = SupportDeps(llm=llm, settings=settings, outbox=outbox)
        start = time.perf_counter()
        deps.index()
        report.timing("index_build_seconds", time.perf_counter() - start)
        rows = []
        progress.stage("route messages", len(examples))
        with SupportBot(db, deps) as bot:
            start = time.perf_counter()
            for i, ex in enumerate(examples):
                state = bot.ask(f"m{i:02d}", ex.message)
                rows.append(_row(ex, state, deps))
                progress.step(1)
            report.timing("graph_seconds_per_message", (time.perf_counter() - start) / len(examples))
            _hitl(report, bot, rows, outbox)
        _restart(report, db, outbox, rows)
    # the routing and draft numbers lead the report (the results index shows the first few); HITL ones follow
    hitl = {k: report.metrics.pop(k) for k in ("hitl_outbox_records", "hitl_paths_ok", "restart_resumed")
            if k in report.metrics}
    _results(report, config, rows)
    lead = [k for k in HEADLINE if k in report.metrics]
    report.metrics = {**{k: report.metrics[k] for k in lead}, **report.metrics, **hitl}
    return report


def _row(ex: Any, state: dict[str, Any], deps: Any) -> dict[str, Any]:
    from mastery.agents.support.drafting import cites, mentions_key_fact

    index = deps.index()
    gold_policy = index.for_intent(ex.intent)
    draft, policy = state.get("draft"), index.by_id.get(state.get("policy_id") or "")
    info, cls = state.get("draft_info", {}), state.get("classification", {})
    return {
        "thread": state["thread_id"], "message": ex.message, "gold": ex.intent, "ambiguous": ex.ambiguous,
        "intent": state["intent"], "decided_by": state["decided_by"], "llm_calls": cls.get("attempts", 0),
        "llm_raw": " | ".join(r.strip().replace("\n", " ")[:60] for r in cls.get("raw", [])),
        "fallback": state["second_opinion"]["intent"],  # the fallback classifier's answer, whoever decided
        "search_top": (index.search_policies(ex.message, 1) or [""])[0],
        "gold_policy": gold_policy.id if gold_policy else None, "policy_id": state.get("policy_id"),
        "retrieved": state.get("retrieved_ids", []), "draft": draft, "draft_source": info.get("source"),
        "draft_problem": info.get("problem"), "raw_cites": bool(policy and cites(info.get("raw", ""), policy.id)),
        "cites": bool(draft and policy and cites(draft, policy.id)),
        "key_fact": bool(draft and policy and mentions_key_fact(draft, policy)),
        "length_ok": bool(draft and 120 <= len(draft) <= 1400),
        "tokens": cls.get("prompt_tokens", 0) + cls.get("completion_tokens", 0)
        + info.get("prompt_tokens", 0) + info.get("completion_tokens", 0),
        "status": state["status"],
    }


def _hitl(report: Report, bot: Any, rows: list[dict[str, Any]], outbox: Path) -> None:
    """Approve one draft, send an edited text for another, reject a third; replay a send; the outbox must hold
    exactly the approved and the edited text, once each."""
    from mastery.agents.support.drafting import read_outbox, send_email
    from mastery.agents.support.graph import SupportError

    drafted = [r for r in rows if r["draft"]]
    if len(drafted) < 4:
        report.check("hitl_paths", False, "at least 4 drafted threads to exercise approve/edit/reject/restart",
                     len(drafted))
        return
    approve, edit, reject = drafted[0], drafted[1], drafted[2]
    edited_text = edit["draft"].replace("Thank you for your message.", "Thank you for writing to us, and sorry "
                                        "for the trouble.") + "\n(edited by a person)"
    states = {"approve": bot.review(approve["thread"], "approve"),
              "edit": bot.review(edit["thread"], "edit", edited_text),
              "reject": bot.review(reject["thread"], "reject")}
    for r, action in ((approve, "approve"), (edit, "edit"), (reject, "reject")):
        r["status"] = states[action]["status"]
    # a replayed send (a crash between writing the outbox and saving the checkpoint re-runs the node) writes nothing
    sent = states["approve"]["sent"]
    replay = send_email(outbox, key=sent["key"], thread_id=sent["thread_id"], text=sent["text"],
                        policy_id=sent["policy_id"], decision="approve")
    try:
        bot.review(approve["thread"], "approve")
        second_review = "accepted (wrong)"
    except SupportError as exc:
        second_review = f"refused: {exc}"
    records = read_outbox(outbox)
    texts = [r["text"] for r in records]
    ok = (texts == [approve["draft"], edited_text] and states["reject"]["status"] == "rejected"
          and replay["duplicate"] and second_review.startswith("refused"))
    report.metric("hitl_outbox_records", len(records))
    report.metric("hitl_paths_ok", float(ok))
    report.check("hitl_paths", ok, "approve sends the draft, edit sends the edited text, reject sends nothing: the "
                 "outbox holds exactly those 2 emails once each, a replayed send and a second review add nothing",
                 f"{len(records)} outbox records; replay duplicate={replay['duplicate']}; "
                 f"second review {second_review}")
    report.table("Human in the loop", [
        {"thread": approve["thread"], "decision": "approve", "status": states["approve"]["status"],
         "outbox": "draft as written"},
        {"thread": edit["thread"], "decision": "edit", "status": states["edit"]["status"],
         "outbox": "the edited text"},
        {"thread": reject["thread"], "decision": "reject", "status": states["reject"]["status"], "outbox": "nothing"},
        {"thread": approve["thread"], "decision": "send replayed", "status": "duplicate" if replay["duplicate"]
         else "SENT TWICE", "outbox": "nothing new"},
        {"thread": approve["thread"], "decision": "approve again", "status": second_review, "outbox": "nothing new"},
    ])


def _restart(report: Report, db: Path, outbox: Path, rows: list[dict[str, Any]]) -> None:
    """Resume a thread that stopped at the review in this process from a NEW process (the CLI), via SQLite."""
    from mastery.agents.support.drafting import read_outbox

    waiting = [r for r in rows if r["draft"] and r["status"] == "awaiting_review"]
    if not waiting:
        report.check("restart_resume", False, "a drafted thread left waiting for review", 0)
        return
    thread = waiting[0]
    before = len(read_outbox(outbox))
    cli = [sys.executable, "-m", "mastery.cli", "support"]
    start = time.perf_counter()
    review = subprocess.run([*cli, "review", "--thread", thread["thread"], "--approve", "--db", str(db),
                             "--outbox", str(outbox)], capture_output=True, text=True, timeout=120)
    report.timing("restart_resume_seconds", time.perf_counter() - start)
    show = subprocess.run([*cli, "show", "--thread", thread["thread"], "--db", str(db)], capture_output=True,
                          text=True, timeout=120)
    records = read_outbox(outbox)
    ok = (review.returncode == 0 and show.returncode == 0 and "(status sent)" in show.stdout
          and len(records) == before + 1 and records[-1]["text"] == thread["draft"])
    thread["status"] = "sent" if ok else thread["status"]
    report.metric("restart_resumed", float(ok))
    report.check("restart_resume", ok, "a thread stopped at the review in this process is approved by "
                 "'mastery support review' in a new process from the SQLite checkpoint, and its draft is sent once",
                 f"review exit {review.returncode}, show exit {show.returncode}, outbox +{len(records) - before}"
                 + (f"; stderr: {review.stderr.strip().splitlines()[-1][:160]}" if review.returncode else ""))


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 6) if flags else 0.0


def _results(report: Report, config: Config, rows: list[dict[str, Any]]) -> None:
    from mastery.agents.support import ALL_INTENTS

    n = len(rows)
    routed = [r for r in rows if r["gold_policy"]]  # messages a policy covers
    drafted = [r for r in rows if r["draft"]]
    by_llm = [r for r in rows if r["decided_by"] in ("llm", "llm_retry")]
    by_fallback = [r for r in rows if r["decided_by"] not in ("llm", "llm_retry")]
    others = [r for r in rows if r["gold"] == "other"]
    m = report.metric
    m("n_messages", n)
    acc = m("intent_accuracy", _rate([r["intent"] == r["gold"] for r in rows]))
    m("fallback_accuracy", _rate([r["fallback"] == r["gold"] for r in rows]))
    m("llm_first_try_rate", _rate([r["decided_by"] == "llm" for r in rows]))
    m("llm_retry_rate", _rate([r["decided_by"] == "llm_retry" for r in rows]))
    fallback_rate = m("fallback_rate", len(by_fallback) / n)
    # accuracies of groups that can be empty are reported only when the group is not (0 of 0 is not 0.0)
    if by_llm:
        m("llm_decided_accuracy", _rate([r["intent"] == r["gold"] for r in by_llm]))
    if by_fallback:
        m("fallback_decided_accuracy", _rate([r["intent"] == r["gold"] for r in by_fallback]))
    agree = [r for r in by_llm if r["intent"] == r["fallback"]]
    disagree = [r for r in by_llm if r["intent"] != r["fallback"]]
    m("llm_fallback_agreement_rate", len(agree) / len(by_llm) if by_llm else 0.0)
    if agree:
        m("accuracy_when_agree", _rate([r["intent"] == r["gold"] for r in agree]))
    if disagree:
        m("accuracy_when_disagree", _rate([r["intent"] == r["gold"] for r in disagree]))
    if others:
        m("escalation_recall", _rate([r["intent"] == "other" for r in others]))
    if any(r["intent"] == "other" for r in rows):
        m("escalation_precision", _rate([r["gold"] == "other" for r in rows if r["intent"] == "other"]))
    hit = m("retrieval_hit_rate", _rate([r["gold_policy"] in r["retrieved"] for r in routed]))
    m("search_hit_at_1", _rate([r["search_top"] == r["gold_policy"] for r in routed]))
    m("draft_rate", len(drafted) / n)
    m("draft_cites_policy_rate", _rate([r["cites"] for r in drafted]))
    m("draft_cites_gold_policy_rate", _rate([r["cites"] and r["policy_id"] == r["gold_policy"] for r in drafted]))
    m("llm_draft_cited_itself_rate", _rate([r["raw_cites"] for r in drafted if r["draft_source"] != "template"]))
    key = m("draft_key_fact_rate", _rate([r["key_fact"] for r in drafted]))
    m("draft_length_ok_rate", _rate([r["length_ok"] for r in drafted]))
    m("draft_llm_rate", _rate([r["draft_source"] == "llm" for r in drafted]))
    m("draft_citation_added_rate", _rate([r["draft_source"] == "llm+citation" for r in drafted]))
    m("draft_template_rate", _rate([r["draft_source"] == "template" for r in drafted]))
    m("tokens_per_message", sum(r["tokens"] for r in rows) / n)

    report.check("intent_accuracy", acc >= config.min_intent_accuracy,
                 f"graph intent accuracy (LLM, retry, fallback) >= {config.min_intent_accuracy}", acc)
    report.check("retrieval_hit_rate", hit >= config.min_retrieval_hit_rate, "the right policy is among the "
                 f"retrieved ones for >= {config.min_retrieval_hit_rate} of the messages a policy covers", hit)
    report.check("draft_key_fact_rate", key >= config.min_draft_key_fact_rate,
                 f"share of drafts stating a key rule of their policy >= {config.min_draft_key_fact_rate}", key)
    report.check("drafts_cite_policy", all(r["cites"] for r in drafted), "every draft sent to review cites its "
                 "policy id (the code adds the reference when the model forgot)", _rate([r["cites"] for r in drafted]))
    report.check("escalations_have_no_draft", all(not r["draft"] for r in rows if r["intent"] == "other"),
                 "a message routed to 'other' reaches the person without a draft", "ok")
    _figure(report, rows, ALL_INTENTS)
    report.table("Routing summary", [
        {"path": "graph (LLM, one retry, fallback)", "intent accuracy": acc, "share of messages": 1.0},
        {"path": "decided by the LLM (first try or after the reminder)",
         "intent accuracy": report.metrics.get("llm_decided_accuracy", "-"), "share of messages": 1 - fallback_rate},
        {"path": "decided by the fallback inside the graph",
         "intent accuracy": report.metrics.get("fallback_decided_accuracy", "-"), "share of messages": fallback_rate},
        {"path": "fallback classifier alone, all messages", "intent accuracy": report.metrics["fallback_accuracy"],
         "share of messages": 1.0},
        {"path": "LLM decided and the fallback agrees",
         "intent accuracy": report.metrics.get("accuracy_when_agree", "-"), "share of messages": len(agree) / n},
        {"path": "LLM decided, the fallback disagrees (flagged to the reviewer)",
         "intent accuracy": report.metrics.get("accuracy_when_disagree", "-"), "share of messages": len(disagree) / n},
    ])
    report.table("Messages", [
        {"thread": r["thread"], "message": r["message"][:70], "gold": r["gold"] + (" (ambiguous)" if r["ambiguous"]
                                                                                    else ""),
         "intent": r["intent"], "decided by": r["decided_by"], "LLM replies": r["llm_raw"], "fallback": r["fallback"],
         "retrieved": ", ".join(r["retrieved"]), "draft": r["draft_source"] or "-",
         "draft problem": r["draft_problem"] or "", "key rule": r["key_fact"] if r["draft"] else "-",
         "status": r["status"]} for r in rows])
    report.table("Example drafts", [{"thread": r["thread"], "policy": r["policy_id"], "source": r["draft_source"],
                                     "draft": r["draft"].replace("\n", " ")} for r in drafted[:4]])
    _notes(report, config, rows)


def _figure(report: Report, rows: list[dict[str, Any]], labels: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    index = {name: i for i, name in enumerate(labels)}
    fig, axes = plt.subplots(1, 3, figsize=(19, 6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    for ax, key, title in ((axes[0], "intent", "graph: LLM + retry + fallback"),
                           (axes[1], "fallback", "fallback classifier alone")):
        cm = np.zeros((len(labels), len(labels)), dtype=int)  # (gold, predicted)
        for r in rows:
            cm[index[r["gold"]], index[r[key]]] += 1
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        acc = sum(r[key] == r["gold"] for r in rows) / len(rows)
        ax.set(xlabel="predicted intent", ylabel="true intent", title=f"{title} (accuracy {acc:.2f})")
    present = [name for name in labels if any(r["gold"] == name for r in rows)]
    y = np.arange(len(present))
    for offset, key, name in ((-0.2, "intent", "graph"), (0.2, "fallback", "fallback alone")):
        per = [np.mean([r[key] == r["gold"] for r in rows if r["gold"] == g]) for g in present]
        axes[2].barh(y + offset, per, height=0.4, label=name)
    axes[2].set_yticks(y, present)
    axes[2].invert_yaxis()
    axes[2].set(xlim=(0, 1.05), xlabel="accuracy", title="per-intent accuracy")
    axes[2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    report.figure("intent_confusion", fig)


def _notes(report: Report, config: Config, rows: list[dict[str, Any]]) -> None:
    mt = report.metrics
    llm = ("a scripted fake model (each message takes a different path: good JSON, prose then JSON, invented "
           "intents, an unusable draft, an escalation)" if config.llm == "scripted"
           else f"the local LLM ({config.llm_model or 'the configured model'}, llama.cpp) at temperature 0")
    report.note(
        f"{len(rows)} labelled customer messages ({sum(r['ambiguous'] for r in rows)} ambiguous, "
        f"{sum(r['gold'] == 'other' for r in rows)} that no policy covers) went through the LangGraph router with "
        f"{llm}. Classification asks for a JSON object naming one of 9 intents; a reply that does not parse or names "
        "an intent outside the list gets one reminder, then the fallback decides (keyword rules, then MiniLM "
        "similarity to each intent's description when retrieval is hybrid, else 'other'). "
        f"The LLM decided {1 - mt['fallback_rate']:.0%} of messages ({mt['llm_retry_rate']:.0%} only after the "
        f"reminder) and the fallback {mt['fallback_rate']:.0%}; graph accuracy {mt['intent_accuracy']:.2f} vs "
        f"{mt['fallback_accuracy']:.2f} for the fallback alone."
        + (" With the worked examples in the prompt, every reply of this model parsed on the first try, so the "
           "reminder and the fallback never decided here; the tests and the tiny preset drive those paths with a "
           "scripted model." if mt["llm_first_try_rate"] == 1.0 else "")
        + " The fallback's keyword rules were written together "
        "with these messages, so its score here is optimistic; the LLM never saw them (its four worked examples are "
        "other messages). Their disagreement is the useful signal: the reviewer sees the fallback's intent whenever "
        "it differs" + (f"; when both agreed the intent was right {mt['accuracy_when_agree']:.0%} of the time, when "
                        f"they disagreed {mt['accuracy_when_disagree']:.0%}"
                        if "accuracy_when_agree" in mt and "accuracy_when_disagree" in mt else "") + ".")
    if "escalation_recall" in mt:
        report.note(
            f"Escalation: {mt['escalation_recall']:.0%} of the messages no policy covers were routed to 'other' (a "
            "person, no draft). The rest got a policy's draft anyway, which the reviewer must reject or rewrite: a "
            "small model prefers to pick some listed category over 'none of these'. Intent accuracy below the "
            f"{config.min_intent_accuracy} goal is this model's limit, not the graph's: every path a wrong or "
            "malformed answer can take ends at the human review, never in a sent email.")
    report.note(
        "Retrieval: the intent's policy always goes to the draft, and a search over the policy sections with the "
        f"message ({config.retrieval}) adds up to 2 more for the reviewer; the right policy was retrieved for "
        f"{mt['retrieval_hit_rate']:.0%} of covered messages (a wrong intent retrieves the wrong policy unless the "
        f"search finds the right one), and the search alone put it first {mt['search_hit_at_1']:.0%} of the time.")
    report.note(
        f"Drafts: {mt['draft_llm_rate']:.0%} used as the model wrote them, {mt['draft_citation_added_rate']:.0%} "
        f"needed the policy reference appended, {mt['draft_template_rate']:.0%} fell back to the template (empty, "
        "cut off, code, an echo of the prompt, or a loop). Only the model's first body paragraph is kept: after it, "
        f"a small model tends to paste the rest of the policy. {mt['draft_key_fact_rate']:.0%} of drafts state at "
        "least one concrete rule of their policy as written ('30 days', 'Account > Billing'); "
        f"{mt['draft_cites_gold_policy_rate']:.0%} cite the policy the message needed (a wrong intent drafts from "
        "the wrong policy). Stating a rule is not answering the question well: the model often quotes a rule "
        "next to the point, and that is what the human review is for.")
    report.note(
        "Human in the loop and restart: the graph stops in human_review with interrupt(); the checkpoint is a "
        "SQLite file (langgraph SqliteSaver), so 'mastery support review' in a new process resumed a waiting "
        "thread and sent its draft. send() is idempotent per thread: the outbox record's key is the thread id "
        "plus a hash of the message, checked under a file lock, so a replayed send writes nothing.")
