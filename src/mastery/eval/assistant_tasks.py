"""The Research Assistant's labelled evaluation set: questions over the three registered PDFs and ATT&CK, each
with its gold source and the key facts a correct answer holds, plus questions no document answers.

    from mastery.eval.assistant_tasks import QUESTIONS, key_facts_found, source_correct, refused

    for q in QUESTIONS:
        answer, hits = assistant(q.question)
        q.answerable and key_facts_found(answer, q)     # every key fact in the answer
        source_correct(hits, q)                         # a cited/retrieved passage comes from the gold source
        not q.answerable and refused(answer)            # "I don't know" where nothing answers it

Key facts were written from the text that :mod:`mastery.retrieval.pdf_text` extracts (pypdfium2) and the
ATT&CK technique Documents; ``tests/test_assistant_eval.py`` checks that each one occurs on its gold page, and
that each unanswerable question's ``absent`` terms occur in no document. Page numbers are the PDF's 1-based
page indices (what the knowledge base stores), not the numbers printed on the pages.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mastery.eval.rag_tasks import source_matches

ATTACK_SOURCE = "mitre-attack"  # the technique Documents' `source` metadata
DOCUMENTS = ("libtasn1.pdf", "shared-mime-info-spec.pdf", "debian-faq.en.pdf", ATTACK_SOURCE)


@dataclass(frozen=True)
class EvalQuestion:
    id: str  # "debian-03": document prefix and number, stable across versions of the set
    question: str
    source: str  # a file name from DOCUMENTS, ATTACK_SOURCE, or "" when no document answers it
    pages: tuple[int, ...] = ()  # gold PDF pages (1-based); () = any page of the file
    technique_id: str = ""  # the gold ATT&CK technique for ATTACK_SOURCE questions
    # Every fact must be in a correct answer; a fact is a tuple of alternatives, any one of which suffices.
    key_facts: tuple[tuple[str, ...], ...] = ()
    absent: tuple[str, ...] = ()  # unanswerable questions: terms of the answer that no document contains

    @property
    def answerable(self) -> bool:
        return bool(self.source)

    @property
    def document(self) -> str:
        """Which document the question is about ("none" for unanswerable ones): the per-document grouping."""
        return self.source or "none"

    @property
    def expected_source(self) -> str:
        """The gold source in :func:`mastery.eval.rag_tasks.source_matches`' notation ("file.pdf p.3|4", "T1003")."""
        if self.technique_id:
            return self.technique_id
        if not self.pages:
            return self.source
        return f"{self.source} p.{'|'.join(map(str, self.pages))}"


def _q(id: str, question: str, source: str, pages: tuple[int, ...], *facts: tuple[str, ...]) -> EvalQuestion:
    return EvalQuestion(id, question, source, pages, key_facts=facts)


def _attack(id: str, question: str, technique: str, *facts: tuple[str, ...]) -> EvalQuestion:
    return EvalQuestion(id, question, ATTACK_SOURCE, (), technique, facts)


def _none(id: str, question: str, *absent: str) -> EvalQuestion:
    return EvalQuestion(id, question, "", absent=absent)


LIBTASN1, MIME, FAQ = "libtasn1.pdf", "shared-mime-info-spec.pdf", "debian-faq.en.pdf"
QUESTIONS: tuple[EvalQuestion, ...] = (
    # -- the GNU Libtasn1 manual (texinfo: numbered sections, "[Function]" entries) ----------------------------
    _q("libtasn1-01", "Which ASN.1 type does this version of libtasn1 not handle?", LIBTASN1, (6,), ("REAL",)),
    _q("libtasn1-02", "How do comments begin in the ASN.1 syntax that libtasn1 parses?", LIBTASN1, (5,), ("--",)),
    _q("libtasn1-03", "What does the asn1Parser program generate from a file of ASN.1 definitions?", LIBTASN1, (8,),
       ("array",)),
    _q("libtasn1-04", "What does the asn1Coding program generate?", LIBTASN1, (8,), ("DER",)),
    _q("libtasn1-05", "What does the asn1Decoding program generate?", LIBTASN1, (10,), ("structure",)),
    _q("libtasn1-06", "Which option makes asn1Decoding use strict DER decoding?", LIBTASN1, (10,),
       ("--strict", "-s")),
    _q("libtasn1-07", "What is the name of libtasn1's header file?", LIBTASN1, (7,), ("libtasn1.h",)),
    _q("libtasn1-08", "Which type does libtasn1 use to store ASN.1 definitions and structures?", LIBTASN1, (7,),
       ("asn1_node",)),
    _q("libtasn1-09", "Under which license may the libtasn1 library itself be used?", LIBTASN1, (4,),
       ("Lesser General Public License", "LGPL")),
    _q("libtasn1-10", "Which libtasn1 function returns a string describing an error code?", LIBTASN1, (25, 26),
       ("asn1_strerror",)),
    _q("libtasn1-11", "What does asn1_check_version return when the run-time library is older than required?",
       LIBTASN1, (26,), ("NULL",)),
    _q("libtasn1-12", "Which ASN.1 encoding rules does libtasn1 encode and decode?", LIBTASN1, (4,),
       ("DER", "Distinguished Encoding Rules")),
    # -- the Shared MIME-info Database specification (numbered sections "2.1.") --------------------------------
    _q("mime-01", "With which magic string does the shared MIME-info magic file start?", MIME, (9,),
       ("MIME-Magic",)),
    _q("mime-02", "Which extended attribute can store a file's MIME type?", MIME, (14,), ("user.mime_type",)),
    _q("mime-03", "Which version of the Shared MIME-info Database specification is this document?", MIME, (1,),
       ("0.21",)),
    _q("mime-04", "Which command must an application run after installing or changing its MIME XML file?", MIME,
       (3,), ("update-mime-database",)),
    _q("mime-05", "Of which MIME type are all text/* types implicitly subclasses?", MIME, (14,), ("text/plain",)),
    _q("mime-06", "How must applications compare glob patterns with file names with respect to letter case?", MIME,
       (7,), ("case-insensitive", "case insensitive", "ignoring case")),
    _q("mime-07", "With which magic string does the treemagic file start?", MIME, (10,), ("MIME-TreeMagic",)),
    _q("mime-08", "What does each line of the globs2 file contain?", MIME, (7,), ("weight",), ("pattern", "glob")),
    _q("mime-09", "In what form does mime.cache hold the database's information?", MIME, (3,),
       ("binary", "mmap")),
    _q("mime-10", "Which specification defines the directories under which the MIME database is stored?", MIME,
       (2,), ("Base Directory",)),
    _q("mime-11", "Which RFC defines the key words MUST and SHOULD used in the specification?", MIME, (2,),
       ("2119",)),
    # -- the Debian GNU/Linux FAQ (justified LaTeX: pypdf runs its words together) ----------------------------
    _q("debian-01", "Who created the Debian Project, and in which year?", FAQ, (10,), ("Murdock",), ("1993",)),
    _q("debian-02", "Where does the name Debian come from?", FAQ, (11,), ("Debra",), ("Ian",)),
    _q("debian-03", "What is the codename of Debian 11, the stable release?", FAQ, (13, 29), ("bullseye",)),
    _q("debian-04", "After a Debian release becomes stable, which updates does it still get?", FAQ, (13,),
       ("security",)),
    _q("debian-05", "Where do the codenames of Debian releases come from?", FAQ, (29,), ("Toy Story",)),
    _q("debian-06", "Who was sid, after whom Debian's unstable distribution is named?", FAQ, (30,),
       ("next door",)),
    _q("debian-07", "Which apt command puts a package on hold?", FAQ, (40,), ("apt-mark hold",)),
    _q("debian-08", "Which dpkg command finds the installed package that provided a particular file?", FAQ, (47,),
       ("dpkg --search", "dpkg -S")),
    _q("debian-09", "How do I list the files that an installed Debian package provides?", FAQ, (47,),
       ("dpkg --listfiles", "dpkg -L")),
    _q("debian-10", "What is a Debian conffile?", FAQ, (37,), ("configuration",), ("overwrit", "preserv")),
    _q("debian-11", "Which program stops and restarts running daemons while a package is upgraded?", FAQ, (47, 50),
       ("start-stop-daemon",)),
    _q("debian-12", "Which non-profit organization based in the United States accepts donations for Debian?", FAQ,
       (65,), ("Software in the Public Interest", "SPI")),
    _q("debian-13", "What are Debian's three major distributions?", FAQ, (29,), ("stable",), ("testing",),
       ("unstable",)),
    _q("debian-14", "Which devscripts command builds a binary package from an unpacked source package?", FAQ, (41,),
       ("debuild",)),
    _q("debian-15", "Who decided to use Toy Story names for Debian releases?", FAQ, (30,), ("Bruce Perens",)),
    # -- ATT&CK techniques (one Document per technique) -----------------------------------------------------
    _attack("attack-01", "Which process memory do adversaries read to dump Windows credentials?", "T1003.001",
            ("LSASS", "Local Security Authority")),
    _attack("attack-02", "Why do password-spraying attackers try one password against many accounts?", "T1110.003",
            ("lockout",)),
    _attack("attack-03", "Which protocol do adversaries abuse to hide command and control traffic in name lookups?",
            "T1071.004", ("DNS", "Domain Name System")),
    _attack("attack-04", "Where in Windows do adversaries add a program so it runs each time a user logs in?",
            "T1547.001", ("run key", "startup folder")),
    _attack("attack-05", "Which Windows utility creates scheduled tasks from the command line?", "T1053.005",
            ("schtasks",)),
    _attack("attack-06", "Why do adversaries encrypt data on target systems for impact?", "T1486",
            ("availability", "inaccessible", "ransom")),
    _attack("attack-07", "Which PowerShell cmdlet can run a command on a remote computer?", "T1059.001",
            ("Invoke-Command",)),
    _attack("attack-08", "What does Microsoft call its implementation of the Remote Desktop Protocol?", "T1021.001",
            ("Remote Desktop Services", "RDS")),
    # -- answered by no document: the expected answer is "I don't know" --------------------------------------
    _none("none-01", "Who won the 2014 football World Cup?", "World Cup"),
    _none("none-02", "What is the default TCP port of the PostgreSQL server?", "5432"),
    _none("none-03", "What is the capital city of Australia?", "Canberra"),
    _none("none-04", "How much does a commercial support contract for libtasn1 cost?", "support contract"),
    _none("none-05", "What is the boiling point of water at sea level?", "boiling point"),
    _none("none-06", "What is the codename of Debian 14?", "forky"),
    _none("none-07", "Which MIME type does the shared MIME-info specification give to Rust source files?", "rust"),
    _none("none-08", "How many Debian developers voted in the 2020 project leader election?", "2020 election",
          "leader election"),
    _none("none-09", "Which ATT&CK technique ID did MITRE assign to quantum key theft?", "quantum"),
    _none("none-10", "What is the maximum certificate size libtasn1 can decode, in megabytes?", "megabyte"),
)


# -- scoring -------------------------------------------------------------------------------------------------
_QUOTES = str.maketrans({"’": "'", "‘": "'", "”": '"', "“": '"', "‐": "-", "‑": "-", "–": "-", "—": "-",
                         "\u00a0": " "})


def normalize(text: str) -> str:
    """Case-folded text with typographic quotes and dashes made plain and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return " ".join(text.split())


def contains_fact(text: str, fact: str) -> bool:
    """``fact`` occurs in ``text`` (normalized); a fact of four characters or fewer must stand as a word ("no" is
    not found in "know", "-s" not in "--strict")."""
    text, fact = normalize(text), normalize(fact)
    if len(fact) > 4:
        return fact in text
    return re.search(rf"(?<![\w-]){re.escape(fact)}(?![\w-])", text) is not None


def facts_found(answer: str, q: EvalQuestion) -> list[bool]:
    """For each key fact, whether any of its alternatives is in ``answer``."""
    return [any(contains_fact(answer, alt) for alt in fact) for fact in q.key_facts]


def key_facts_found(answer: str, q: EvalQuestion) -> bool:
    """Key-fact correctness: every key fact is in the answer (never true for an unanswerable question)."""
    return q.answerable and all(facts_found(answer, q))


def source_correct(hits: Iterable[Any], q: EvalQuestion) -> bool:
    """Correct source: one of the cited or retrieved passages (anything with ``.metadata``) is from the gold
    source (and one of its gold pages)."""
    return q.answerable and any(source_matches(h, q.expected_source) for h in hits)


def refused(answer: str) -> bool:
    """The answer declines ("I don't know" in any of the usual phrasings): the RAG answerer's own test."""
    from mastery.llm.rag import is_decline

    return is_decline(answer)


def by_document(questions: Sequence[EvalQuestion] = QUESTIONS) -> dict[str, list[EvalQuestion]]:
    out: dict[str, list[EvalQuestion]] = {}
    for q in questions:
        out.setdefault(q.document, []).append(q)
    return out


def summary(questions: Sequence[EvalQuestion] = QUESTIONS) -> dict[str, int]:
    """How many questions per document ("none" = unanswerable)."""
    return dict(Counter(q.document for q in questions))
