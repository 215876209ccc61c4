"""What can go wrong talking to an LLM, each a one-line MasteryError the CLI prints (exit code 2)."""

from __future__ import annotations

from mastery.core.errors import MasteryError


class LLMError(MasteryError):
    """Base class of the LLM runtime's errors."""


class LLMServerError(LLMError):
    """The embedded server could not be started or stopped."""


class LLMServerDown(LLMError):
    """Nothing answers at the configured URL (connection refused, unknown host)."""


class LLMModelNotFound(LLMError):
    """The server is up but does not serve the requested model."""


class LLMTimeout(LLMError):
    """The server accepted the request but did not answer within the timeout."""


class LLMBadResponse(LLMError):
    """The server answered with an error status or a response we cannot use."""
