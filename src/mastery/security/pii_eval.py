"""A labelled PII set with exact gold spans, span-level precision/recall/F1, a figure and a latency probe.

The set has four parts, all deterministic for a seed:

* **synthetic**: sentence templates with values from Faker in seven locales (cards, IBANs, SSNs, phones,
  e-mails, IPs, names, places) and secrets written to each provider's format; the gold span is where the
  value was put, so it is exact by construction;
* **inserted**: real text (passages of the registered PDFs, ATT&CK descriptions, alpaca instructions) with one
  templated sentence put in at a sentence boundary, so the detector must find PII inside prose it has not seen;
* **negatives**: real text as it is; its only gold spans are the e-mail addresses already in it;
* **hard negatives**: look-alikes that are not PII: 16-digit numbers failing Luhn, IBANs with a wrong checksum,
  ISBNs, dates, ATT&CK and CVE ids, version numbers and OIDs, hashes, UUIDs, placeholder keys.

Matching is per entity type and one-to-one. ``overlap`` (the headline) counts a prediction as correct when it
overlaps a gold span of the same type; ``exact`` requires the same offsets. Beside both, ``covered`` counts gold
spans whose every character was redacted by some prediction of any type: what a leak check cares about.

Faker writes some phone strings no numbering plan allows (de_DE ``00008063608``); the set keeps only numbers
libphonenumber calls *possible* in the locale's region, judged on the number alone, never by the detector.

The recognisers' rules were adjusted after reading their errors on seeds 0-3 (:data:`TUNED_SEEDS`); a report
should use another seed (:data:`HELD_OUT_SEED`).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mastery.security.pii import PIIDetector, PIISpan

log = logging.getLogger(__name__)

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL")
SLOT = re.compile(r"\{([A-Z_]+)\}")

# Each template names its slots; some give context words ("card", "IBAN"), some give none on purpose.
TEMPLATES: tuple[str, ...] = (
    "Please charge my credit card {CREDIT_CARD} for the renewal.",
    "The payment failed for {CREDIT_CARD}, can you check why?",
    "Refund the order to {CREDIT_CARD} and email the receipt to {EMAIL_ADDRESS}.",
    "Wire the deposit to IBAN {IBAN_CODE} before Friday.",
    "My account is {IBAN_CODE}; the salary never arrived.",
    "Transfer 250 EUR from {IBAN_CODE} to {IBAN_CODE} with reference 2024/17.",
    "My social security number is {US_SSN}.",
    "Applicant {PERSON}, SSN {US_SSN}, born in {LOCATION}.",
    "The form lists {US_SSN} as the employee's number.",
    "Call me on {PHONE_NUMBER} after six.",
    "You can reach {PERSON} at {PHONE_NUMBER} or {EMAIL_ADDRESS}.",
    "Her mobile is {PHONE_NUMBER}, the office is {PHONE_NUMBER}.",
    "Contact: {PHONE_NUMBER}",
    "Send the draft to {EMAIL_ADDRESS} and copy {EMAIL_ADDRESS}.",
    "Write to {EMAIL_ADDRESS} if the login fails again.",
    "The alert came from {IP_ADDRESS} and the beacon went to {IP_ADDRESS}.",
    "Block {IP_ADDRESS} on the firewall, it scanned port 22 all night.",
    "Our VPN gateway listens on {IP_ADDRESS}.",
    "Here is my config: {SECRET}",
    "Why does the API reject {SECRET}?",
    "I accidentally committed {SECRET} to the repository, what should I do?",
    "{PERSON} moved from {LOCATION} to {LOCATION} last year.",
    "Dear {PERSON}, your parcel for {LOCATION} is delayed.",
    "Summarise the complaint from {PERSON} ({EMAIL_ADDRESS}, {PHONE_NUMBER}).",
    "Customer {PERSON} paid with {CREDIT_CARD} from {IP_ADDRESS}.",
    "Meeting notes: {PERSON} will send the keys ({SECRET}) to {EMAIL_ADDRESS}.",
)

HARD_NEGATIVES: tuple[str, ...] = (
    "Order {BAD_CARD} was refunded yesterday.",
    "The card number {BAD_CARD} was rejected as invalid.",
    "Transfer to {BAD_IBAN} failed the checksum.",
    "ISBN {ISBN} is the second edition.",
    "The incident started on {DATE} at {TIME} and ended on {DATE}.",
    "Technique {ATTACK_ID} is used by the group, see also {CVE}.",
    "Upgrade to version {VERSION} before applying the patch.",
    "The certificate policy OID is {OID}.",
    "sha256:{SHA256} matches the release tarball.",
    "Commit {GIT_SHA} fixed the regression, request id {UUID}.",
    "Set api_key = {PLACEHOLDER} in the config file.",
    "The invoice INV-{YEAR}-{NUM6} totals {PRICE}.",
    "We use scikit-learn {VERSION3} and numpy {VERSION3}.",
    "The SSN {BAD_SSN} is a published example and was never issued.",
    "Order {NUM9} ships in {NUM1} days from warehouse {NUM4}.",
    "The model reached {PERCENT} accuracy on {NUM5} samples.",
)


@dataclass(frozen=True)
class GoldSpan:
    entity_type: str
    start: int
    end: int


@dataclass(frozen=True)
class PIIExample:
    text: str
    spans: tuple[GoldSpan, ...]
    source: str  # synthetic, inserted:<origin>, negative:<origin>, hard_negative
    locale: str = ""


_B62 = string.ascii_letters + string.digits


class _Values:
    """Values per entity type from seeded Fakers (one per locale) and one seeded RNG."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(LOCALES):
            self.fakers[loc] = Faker(loc)
            self.fakers[loc].seed_instance(seed * 1000 + i)
        self.dropped_phones = 0
        self.secret_kind = ""

    def _s(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def value(self, entity: str, locale: str) -> str:
        f, rng = self.fakers[locale], self.rng
        if entity == "CREDIT_CARD":
            kind = rng.choice(["visa16", "visa13", "visa19", "mastercard", "amex", "discover", "jcb16", "diners",
                               "maestro"])
            digits = f.credit_card_number(card_type=kind)
            sep = rng.choice(["", " ", "-"])
            groups = ([digits[:4], digits[4:10], digits[10:]] if kind == "amex"
                      else [digits[i:i + 4] for i in range(0, len(digits), 4)])
            return sep.join(groups) if sep else digits
        if entity == "IBAN_CODE":
            iban = f.iban()
            return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban
        if entity == "US_SSN":
            return self.fakers["en_US"].ssn()
        if entity == "PHONE_NUMBER":
            return self._phone(locale)
        if entity == "EMAIL_ADDRESS":
            return rng.choice([f.email, f.company_email, f.free_email])()
        if entity == "IP_ADDRESS":
            import ipaddress

            kind = rng.random()
            if kind < 0.4:
                return f.ipv4_public()
            if kind < 0.7:
                return f.ipv4_private()
            return ipaddress.ip_address(f.ipv6()).compressed if rng.random() < 0.5 else f.ipv6()
        if entity == "SECRET":
            return self.secret()
        if entity == "PERSON":
            return f.name()
        if entity == "LOCATION":
            return rng.choice([f.city, f.country])()
        raise ValueError(f"no generator for entity {entity!r}")

    def _phone(self, locale: str) -> str:
        import phonenumbers

        region = locale.split("_")[1].replace("UK", "GB")
        for _ in range(20):
            number = self.fakers[locale].phone_number()
            try:
                if phonenumbers.is_possible_number(phonenumbers.parse(number, region)):
                    return number
            except phonenumbers.NumberParseException:
                pass
            self.dropped_phones += 1
        raise RuntimeError(f"Faker wrote no possible {locale} phone number in 20 tries")

    def secret(self) -> str:
        rng, s = self.rng, self._s
        kind = rng.choice(["aws", "github", "github_pat", "slack", "openai", "pem", "jwt", "assigned", "password"])
        self.secret_kind = kind  # the last two are written as "key = value" lines by ``fill``
        if kind == "aws":
            return "AKIA" + s(string.ascii_uppercase + "234567", 16)
        if kind == "github":
            return rng.choice(["ghp_", "gho_", "ghs_"]) + s(_B62, 36)
        if kind == "github_pat":
            return f"github_pat_{s(_B62, 22)}_{s(_B62, 59)}"
        if kind == "slack":
            return f"xox{rng.choice('bpa')}-{s(string.digits, 12)}-{s(string.digits, 13)}-{s(_B62, 24)}"
        if kind == "openai":
            return rng.choice(["sk-", "sk-proj-"]) + s(_B62, 20) + "T3BlbkFJ" + s(_B62, 20)
        if kind == "pem":
            body = "\n".join(s(string.ascii_letters + string.digits + "+/", 64) for _ in range(3))
            label = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
            return f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"
        if kind == "jwt":
            def b64(obj: dict[str, Any]) -> str:
                return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
            return (f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': s(string.digits, 8), 'iat': 1700000000})}"
                    f".{s(_B62 + '-_', 43)}")
        if kind == "assigned":
            return s(string.ascii_lowercase + string.digits, 32)
        return self.fakers["en_US"].password(length=rng.randint(10, 16))


def _assignment(value: str, rng: random.Random) -> tuple[str, int]:
    """A config line around a generic secret; returns the line and where the value starts in it."""
    key = rng.choice(["api_key", "API_KEY", "client_secret", "password", "auth_token", "SECRET_KEY"])
    prefix = rng.choice([f"{key} = \"", f"{key}: ", f"{key}='", f"export {key}="])
    return prefix + value + ("\"" if prefix.endswith("\"") else "'" if prefix.endswith("'") else ""), len(prefix)


def fill(template: str, values: _Values, locale: str) -> tuple[str, list[GoldSpan]]:
    """``template`` with each ``{ENTITY}`` replaced by a fresh value; the gold spans point at the values."""
    out, spans, pos = [], [], 0
    for match in SLOT.finditer(template):
        out.append(template[pos:match.start()])
        offset = sum(len(p) for p in out)
        entity = match.group(1)
        value = values.value(entity, locale)
        start_in, end_in = 0, len(value)
        if entity == "SECRET" and values.secret_kind in ("assigned", "password"):
            line, start_in = _assignment(value, values.rng)  # only the value is gold, not the key name
            value, end_in = line, start_in + len(value)
        out.append(value)
        spans.append(GoldSpan(entity, offset + start_in, offset + end_in))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out), spans


def _hard_negative(template: str, values: _Values) -> str:
    f, rng, s = values.fakers["en_US"], values.rng, values._s

    def bad_card() -> str:
        good = values.value("CREDIT_CARD", "en_US")
        last = good[-1]
        return good[:-1] + str((int(last) + rng.randint(1, 9)) % 10)

    def bad_iban() -> str:  # any other check digits fail mod-97: exactly one pair in 02..98 passes
        iban = values.fakers[rng.choice(LOCALES[1:])].iban()
        return iban[:2] + f"{rng.choice([d for d in range(2, 99) if d != int(iban[2:4])]):02d}" + iban[4:]

    makers: dict[str, Callable[[], str]] = {
        "BAD_CARD": bad_card, "BAD_IBAN": bad_iban, "ISBN": rng.choice([f.isbn13, f.isbn10]),
        "DATE": lambda: f.date(pattern=rng.choice(["%Y-%m-%d", "%d/%m/%Y", "%B %d, %Y", "%d.%m.%Y"])),
        "TIME": f.time,
        "ATTACK_ID": lambda: f"T{rng.randint(1001, 1659)}" + rng.choice(["", f".{rng.randint(1, 9):03d}"]),
        "CVE": lambda: f"CVE-{rng.randint(1999, 2025)}-{rng.randint(1000, 49999)}",
        "VERSION": lambda: ".".join(str(rng.randint(0, 20)) for _ in range(4)),
        "VERSION3": lambda: ".".join(str(rng.randint(0, 30)) for _ in range(3)),
        "OID": lambda: "1.3.6.1.4.1." + ".".join(str(rng.randint(1, 400)) for _ in range(rng.randint(1, 3))),
        "SHA256": lambda: s("0123456789abcdef", 64), "GIT_SHA": lambda: s("0123456789abcdef", 40), "UUID": f.uuid4,
        "PLACEHOLDER": lambda: rng.choice(["YOUR_API_KEY", "os.environ['API_KEY']", "<your-key-here>", "********",
                                           "${API_KEY}", "xxxxxxxxxxxxxxxx"]),
        "YEAR": lambda: str(rng.randint(2015, 2025)), "NUM6": lambda: s(string.digits, 6),
        "PRICE": lambda: f"${rng.randint(10, 99999):,}.{rng.randint(0, 99):02d}",
        # never-issued areas (000, 666), zero groups, and the SSA's published sample number
        "BAD_SSN": lambda: rng.choice([
            f"{rng.choice(['000', '666'])}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
            f"{rng.randint(1, 665):03d}-00-{rng.randint(1, 9999):04d}", "078-05-1120"]),
        "NUM9": lambda: s(string.digits, 9), "NUM1": lambda: str(rng.randint(2, 9)),
        "NUM4": lambda: s(string.digits, 4),
        "NUM5": lambda: f"{rng.randint(1000, 99999):,}", "PERCENT": lambda: f"{rng.uniform(50, 99.9):.1f}%",
    }
    return SLOT.sub(lambda m: makers[m.group(1)](), template)


@lru_cache(maxsize=1)
def real_passages(max_per_source: int = 400, words: int = 80) -> dict[str, tuple[str, ...]]:
    """Real English text without inserted PII: PDF passages, ATT&CK descriptions and alpaca instructions."""
    from mastery.assets.loaders import load_alpaca_demo, load_attack_stix, load_kb_pdfs
    from mastery.retrieval.pdf_text import extract_pdf

    out: dict[str, tuple[str, ...]] = {}
    pdf: list[str] = []
    for path in load_kb_pdfs():
        for page in extract_pdf(path.read_bytes(), name=path.name).pages:
            tokens = page.text.split()
            pdf.extend(" ".join(tokens[i:i + words]) for i in range(0, len(tokens) - words // 2, words))
    out["pdf"] = tuple(pdf[:: max(1, len(pdf) // max_per_source)][:max_per_source])
    attack = [o["description"] for o in load_attack_stix()
              if o.get("type") in ("attack-pattern", "intrusion-set", "malware", "tool") and o.get("description")
              and not o.get("revoked") and not o.get("x_mitre_deprecated")]
    out["attack"] = tuple(" ".join(d.split()[:words]) for d in attack[:: max(1, len(attack) // max_per_source)])
    alpaca = [" ".join(filter(None, (r.get("instruction", ""), r.get("input", "")))) for r in load_alpaca_demo()]
    out["alpaca"] = tuple(a for a in alpaca if a.strip())[:max_per_source]
    return out


# Real text is not PII-free: the manuals name their mailing lists and alpaca writes "john@email.com". Those
# addresses are gold too (an address is unambiguous on its face); everything else in real text is not PII.
REAL_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


def _real_gold(text: str) -> list[GoldSpan]:
    return [GoldSpan("EMAIL_ADDRESS", m.start(), m.end()) for m in REAL_EMAIL.finditer(text)]


def _insert(passage: str, sentence: str, spans: list[GoldSpan], rng: random.Random) -> tuple[str, list[GoldSpan]]:
    cuts = [m.end() for m in re.finditer(r"[.!?]\s", passage)] or [len(passage)]
    cut = rng.choice(cuts)
    head = passage[:cut].rstrip() + " "
    text = head + sentence + " " + passage[cut:].lstrip()
    moved = [GoldSpan(g.entity_type, g.start + len(head), g.end + len(head)) for g in spans]
    inside = range(len(head), len(head) + len(sentence))
    return text, sorted(moved + [g for g in _real_gold(text) if g.start not in inside], key=lambda g: g.start)


def build_pii_set(n_synthetic: int = 400, n_inserted: int = 150, n_negative: int = 150, n_hard: int = 150,
                  seed: int = 0, real_text: bool = True) -> list[PIIExample]:
    """The labelled set; ``real_text=False`` skips the registered assets (inserted and negatives become 0)."""
    values = _Values(seed)
    rng = values.rng
    examples: list[PIIExample] = []
    for i in range(n_synthetic):
        locale = LOCALES[i % len(LOCALES)]
        text, spans = fill(TEMPLATES[rng.randrange(len(TEMPLATES))], values, locale)
        examples.append(PIIExample(text, tuple(spans), "synthetic", locale))
    if real_text and (n_inserted or n_negative):
        passages = real_passages()
        pool = [(name, p) for name in sorted(passages) for p in passages[name]]
        for _ in range(n_inserted):
            origin, passage = pool[rng.randrange(len(pool))]
            locale = rng.choice(LOCALES)
            sentence, spans = fill(TEMPLATES[rng.randrange(len(TEMPLATES))], values, locale)
            text, moved = _insert(passage, sentence, spans, rng)
            examples.append(PIIExample(text, tuple(moved), f"inserted:{origin}", locale))
        for origin, passage in rng.sample(pool, min(n_negative, len(pool))):
            examples.append(PIIExample(passage, tuple(_real_gold(passage)), f"negative:{origin}"))
    for _ in range(n_hard):
        examples.append(PIIExample(_hard_negative(HARD_NEGATIVES[rng.randrange(len(HARD_NEGATIVES))], values), (),
                                   "hard_negative"))
    log.info("PII set: %d examples; %d Faker phone strings dropped as impossible numbers", len(examples),
             values.dropped_phones)
    return examples


# ---------------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class EntityScore:
    entity_type: str
    gold: int
    predicted: int
    tp: int
    fp: int
    fn: int
    covered: int  # gold spans fully redacted by predictions of any type

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.gold if self.gold else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class PIIEvaluation:
    scores: dict[str, EntityScore]  # per entity type, plus "ALL" (micro)
    predictions: list[list[PIISpan]]
    errors: list[dict[str, Any]] = field(default_factory=list)


def _hit(g: GoldSpan, p: PIISpan, mode: str) -> bool:
    return (g.start, g.end) == (p.start, p.end) if mode == "exact" else p.start < g.end and g.start < p.end


def score_spans(examples: Sequence[PIIExample], predictions: Sequence[Sequence[PIISpan]],
                entities: Sequence[str], mode: str = "overlap") -> PIIEvaluation:
    """Per-type one-to-one matching of predictions to gold spans; types outside ``entities`` are ignored."""
    if mode not in ("overlap", "exact"):
        raise ValueError(f"unknown span match mode {mode!r}; choose overlap or exact")
    counts = {e: dict(gold=0, predicted=0, tp=0, covered=0) for e in entities}
    errors: list[dict[str, Any]] = []
    for ex, preds in zip(examples, predictions, strict=True):
        golds = [g for g in ex.spans if g.entity_type in counts]
        preds = [p for p in preds if p.entity_type in counts]
        used: set[int] = set()
        for g in golds:
            c = counts[g.entity_type]
            c["gold"] += 1
            hit = next((i for i, p in enumerate(preds) if i not in used and p.entity_type == g.entity_type
                        and _hit(g, p, mode)), None)
            if hit is None:
                errors.append({"kind": "fn", "entity": g.entity_type, "value": ex.text[g.start:g.end],
                               "source": ex.source, "locale": ex.locale})
            else:
                used.add(hit)
                c["tp"] += 1
            covered = set()
            for p in preds:
                covered.update(range(max(p.start, g.start), min(p.end, g.end)))
            c["covered"] += all(i in covered or ex.text[i].isspace() for i in range(g.start, g.end))
        for i, p in enumerate(preds):
            counts[p.entity_type]["predicted"] += 1
            if i not in used:
                errors.append({"kind": "fp", "entity": p.entity_type, "value": p.text, "source": ex.source,
                               "locale": ex.locale})
    scores = {e: EntityScore(e, c["gold"], c["predicted"], c["tp"], c["predicted"] - c["tp"], c["gold"] - c["tp"],
                             c["covered"]) for e, c in counts.items()}
    total = {k: sum(getattr(s, k) for s in scores.values()) for k in ("gold", "predicted", "tp", "fp", "fn", "covered")}
    scores["ALL"] = EntityScore("ALL", **total)
    return PIIEvaluation(scores, [list(p) for p in predictions], errors)


def evaluate(detector: PIIDetector, examples: Sequence[PIIExample], mode: str = "overlap") -> PIIEvaluation:
    """Run ``detector.find`` on every example and score it on the detector's own entity types."""
    return score_spans(examples, [detector.find(ex.text) for ex in examples], detector.entities, mode)


def metrics_table(evaluation: PIIEvaluation) -> list[dict[str, Any]]:
    """One row per entity type with gold spans or predictions, then ``ALL``; ready for a Markdown table."""
    rows = []
    for name, s in evaluation.scores.items():
        if name != "ALL" and not (s.gold or s.predicted):
            continue
        rows.append({"entity": name, "gold": s.gold, "predicted": s.predicted, "tp": s.tp, "fp": s.fp, "fn": s.fn,
                     "precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4),
                     "covered": round(s.covered / s.gold, 4) if s.gold else 1.0})
    return rows


def metrics_figure(rows: Sequence[dict[str, Any]], title: str = "PII detection (span overlap)") -> Any:
    """Grouped bars of precision, recall and F1 per entity type, with the 0.95 recall / 0.9 precision goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["entity"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    for k, (metric, color) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))):
        ax.bar(x + (k - 1) * 0.27, [r[metric] for r in rows], 0.27, label=metric, color=color)
    ax.axhline(0.95, color="tab:orange", linestyle="--", linewidth=0.8, label="recall goal 0.95")
    ax.axhline(0.90, color="tab:blue", linestyle=":", linewidth=0.8, label="precision goal 0.90")
    ax.set_xticks(x, [f"{n}\n(n={r['gold']})" for n, r in zip(names, rows, strict=True)], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5, frameon=False)
    fig.tight_layout()
    return fig


def latency_texts(n: int = 50, words: int = 200, seed: int = 0, real_text: bool = True) -> list[str]:
    """``n`` texts of about ``words`` words, each with two PII sentences inside: what a guard sees per request."""
    values = _Values(seed + 1)
    rng = values.rng
    filler = ([p for ps in real_passages().values() for p in ps] if real_text
              else [" ".join(rng.choice(("the", "report", "says", "that", "a", "user", "logged", "in", "from",
                                         "home", "and", "asked", "for", "help.")) for _ in range(40))])
    texts = []
    for i in range(n):
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            parts.append(rng.choice(filler))
            if len(parts) in (1, 3):
                parts.append(fill(rng.choice(TEMPLATES), values, LOCALES[i % len(LOCALES)])[0])
        texts.append(" ".join(" ".join(parts).split()[:words]))
    return texts


def measure_latency(detector: PIIDetector, texts: Sequence[str], repeats: int = 1) -> dict[str, float]:
    """Milliseconds per ``redact`` call (what the guard calls), after one warm-up: p50, p95, mean."""
    import numpy as np

    detector.redact(texts[0])
    times = []
    for _ in range(repeats):
        for text in texts:
            t0 = time.perf_counter()
            detector.redact(text)
            times.append((time.perf_counter() - t0) * 1000)
    arr = np.asarray(times)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p95_ms": round(float(np.percentile(arr, 95)), 2),
            "mean_ms": round(float(arr.mean()), 2), "n": len(times)}



TUNED_SEEDS = (0, 1, 2, 3)  # the recognisers' rules were adjusted after reading the errors on these seeds
HELD_OUT_SEED = 7  # report on a seed the rules never saw


def pii_study(n_synthetic: int = 400, n_inserted: int = 150, n_negative: int = 150, n_hard: int = 150,
              seed: int = HELD_OUT_SEED, latency_n: int = 50, with_ner: bool = True,
              real_text: bool = True) -> dict[str, Any]:
    """Everything a report needs in one call: the set's make-up, per-entity metrics (overlap and exact) and
    latency for the default detector, the same with spaCy's PERSON/LOCATION on (``with_ner``), and sample errors.

    The NER variant is scored on all nine types: its precision drop is the reason it is off by default.
    """
    from collections import Counter

    from mastery.security.pii import ALL_ENTITIES, get_pii_detector

    examples = build_pii_set(n_synthetic, n_inserted, n_negative, n_hard, seed=seed, real_text=real_text)
    texts = latency_texts(n=latency_n, seed=seed, real_text=real_text)
    out: dict[str, Any] = {
        "seed": seed, "tuned_seeds": list(TUNED_SEEDS), "examples": len(examples),
        "by_source": dict(sorted(Counter(ex.source.split(":")[0] for ex in examples).items())),
        "gold_spans": dict(sorted(Counter(g.entity_type for ex in examples for g in ex.spans).items())),
    }
    variants = {"default": None, "with_ner": ALL_ENTITIES} if with_ner else {"default": None}
    for name, entities in variants.items():
        detector = get_pii_detector(entities)
        overlap = evaluate(detector, examples, "overlap")
        exact = score_spans(examples, overlap.predictions, detector.entities, "exact")
        out[name] = {"entities": list(detector.entities), "rows": metrics_table(overlap),
                     "exact_all": metrics_table(exact)[-1], "latency": measure_latency(detector, texts),
                     "errors": overlap.errors[:40]}
    return out
