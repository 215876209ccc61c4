"""One real embedded LLM server per test session, shared by test_llm.py and test_rag.py.

Import the fixture into a test module with ``from tests.llm_server import llm_server  # noqa: F401``.
Each importing module gets its own session-scoped fixture definition, so the server itself is kept
here, started on first use and stopped when the last user's fixture is torn down.
"""

from __future__ import annotations

import pytest

_STATE: dict = {"server": None, "users": 0}


def _model_available() -> bool:
    # locate() looks in every MASTERY_DATA_DIR folder and the cache (conftest's have_mirror() expects one folder)
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import locate
    from mastery.llm.settings import EMBEDDED_MODEL

    return locate(get_asset(EMBEDDED_MODEL)) is not None


needs_llm = pytest.mark.skipif(not _model_available(),
                               reason="needs the GGUF model: mastery models pull qwen2.5-coder-0.5b-instruct-q4_k_m")


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory):
    """A running EmbeddedServer (1 thread, 4096-token context) on 127.0.0.1."""
    if not _model_available():
        pytest.skip("needs the GGUF model: mastery models pull qwen2.5-coder-0.5b-instruct-q4_k_m")
    from mastery.llm.server import EmbeddedServer

    if _STATE["server"] is None:
        # session fixtures run before conftest's per-test private cache: keep the GGUF's verification
        # stamp out of the user's cache here too
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MASTERY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
            _STATE["server"] = EmbeddedServer(threads=1, ctx=4096).start()
    _STATE["users"] += 1
    yield _STATE["server"]
    _STATE["users"] -= 1
    if _STATE["users"] == 0:
        _STATE["server"].stop()
        _STATE["server"] = None
