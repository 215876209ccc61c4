"""The L22 support-bot router: classify a customer message, retrieve the policy, draft a reply, let a person approve,
edit or reject it, then send; a LangGraph ``StateGraph`` checkpointed in SQLite so a conversation survives a restart.

- :mod:`.policies`: the support-policy documents this package ships, and a retriever over them;
- :mod:`.classify`: the LLM intent classifier (JSON, one retry) and the keyword/embedding fallback;
- :mod:`.drafting`: the reply email (LLM, checked, or a template built from the policy) and the outbox;
- :mod:`.graph`: the graph, its state, and :class:`~.graph.SupportBot` (ask / review / show);
- :mod:`.scripted`: scripts for the scripted fake model (tests and the lab's tiny preset);
- :mod:`.dataset`: labelled customer messages for the lab.
"""

# The intents a message can have; "other" routes straight to a person (no policy fits, no draft).
INTENTS = ("refund", "shipping", "account_access", "billing", "cancellation", "privacy", "security", "warranty")
OTHER = "other"
ALL_INTENTS = (*INTENTS, OTHER)
