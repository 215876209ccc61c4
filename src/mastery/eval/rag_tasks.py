"""The L19 RAG task set: generated documents (a 3-page PDF handbook and a Markdown runbook) with questions about
them, the questions over the registry PDFs and ATT&CK, and the check that a chunk is a question's source.

    write_text_pdf(folder / "zephyr-handbook.pdf", ZEPHYR_PAGES); (folder / "runbook.md").write_text(RUNBOOK)
    correct = any(source_matches(hit, expected) for hit in answer.hits)
"""

from __future__ import annotations

import re
from typing import Any

# (question, expected source, keywords of a correct answer; any one suffices). Expected source: a technique ID,
# or "file.pdf p.N" (N may be "N|M" when the fact sits on a page boundary), or "file" for any page.
# An empty source marks a question the corpus cannot answer.
TINY_QUESTIONS = (
    ("How many days does the Zephyr-9 keep nightly snapshots?", "zephyr-handbook.pdf p.1", ("42",)),
    ("Which channel pages the on-call engineer when the orders database is down?", "runbook.md", ("heron",)),
    ("Who wrote the novel Moby-Dick?", "", ()),
)
FULL_QUESTIONS = (
    ("Which process memory do adversaries read to dump Windows credentials?", "T1003.001", ("lsass",)),
    ("What is password spraying?", "T1110.003", ("password",)),
    ("Which protocol do adversaries abuse to hide command and control traffic in name lookups?", "T1071.004",
     ("dns", "domain name")),
    ("How do adversaries achieve persistence with Registry run keys?", "T1547.001", ("run key", "startup")),
    ("Which Windows utility can create scheduled tasks from the command line?", "T1053.005", ("schtasks",)),
    ("Why do adversaries encrypt data on target systems for impact?", "T1486", ("availability", "inaccessible",
                                                                               "ransom")),
    ("With which magic string does the shared MIME-info magic file start?", "shared-mime-info-spec.pdf p.9",
     ("mime-magic",)),
    ("Which extended attribute can store a file's MIME type?", "shared-mime-info-spec.pdf p.14",
     ("user.mime_type", "mime_type")),
    ("What does the asn1Parser program generate from ASN.1 definitions?", "libtasn1.pdf p.8", ("array",)),
    ("Which ASN.1 type does this version of libtasn1 not handle?", "libtasn1.pdf p.6", ("real",)),
    ("How do comments begin in the ASN.1 syntax that libtasn1 parses?", "libtasn1.pdf p.5", ("--", "dash")),
    ("What does asn1Decoding generate?", "libtasn1.pdf p.10", ("structure",)),
    ("Who won the 2014 football World Cup?", "", ()),
    ("What is the default TCP port of the PostgreSQL server?", "", ()),
    ("What is the capital city of Australia?", "", ()),
    ("How much does a commercial support contract for libtasn1 cost?", "", ()),
    ("Which ATT&CK technique did MITRE add in 1995?", "", ()),
    ("What is the boiling point of water at sea level?", "", ()),
)
ZEPHYR_PAGES = (
    "Zephyr-9 backup appliance: overview. The Zephyr-9 keeps nightly snapshots for 42 days before it deletes them. "
    "Snapshots are taken at 02:00 local time and are compressed with zstd.",
    "Resetting the administrator password. To reset the Zephyr-9 admin password, hold the blue button on the back "
    "panel for 12 seconds until the status light blinks amber.",
    "Firmware updates. Firmware 7.3 added support for encrypted off-site replication to a second Zephyr-9. Updates "
    "are signed; the appliance refuses firmware whose signature does not verify.",
)
RUNBOOK = ("# Database outage runbook\n\nWhen the orders database is down, the on-call engineer is paged through the "
           "Heron channel. The first step is to fail over to the replica in the Lisbon data centre.\n")


def source_matches(hit: Any, expected: str) -> bool:
    """Whether a retrieved chunk is the expected source: the technique, or the file (and one of the pages)."""
    meta = hit.metadata
    if re.fullmatch(r"T\d{4}(?:\.\d{3})?", expected):
        return meta.get("technique_id") == expected
    source, _, page = expected.partition(" p.")
    return meta.get("source") == source and (not page or str(meta.get("page")) in page.split("|"))
