"""One settings object for every ``MASTERY_*`` variable.

Each value comes from, lowest priority first: the default declared here, a ``.env`` file
(``./.env`` in the current directory, or the file that ``MASTERY_ENV_FILE`` names), then the
process environment. Code reads them only through :func:`get_settings`:

    from mastery.core.settings import get_settings
    cache = get_settings().cache                      # Path, ~ expanded

:func:`get_settings` builds a fresh object on every call (about 0.3 ms), so a test's
``monkeypatch.setenv`` or an edited ``.env`` takes effect at once with no cache to clear.
A bad value raises one :class:`~mastery.core.errors.ConfigError` line that names the variable;
``mastery config show`` prints every effective value and where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mastery.core.errors import ConfigError

ENV_PREFIX = "MASTERY_"
ENV_FILE_VAR = "MASTERY_ENV_FILE"  # points at a .env file other than ./.env
DEFAULT_ENV_FILE = ".env"
DEFAULT_CACHE = Path("~/.cache/mastery")
BACKENDS = ("embedded", "ollama", "openai")
DEFAULT_LLM_TIMEOUT_S = 120.0
DEFAULT_LLM_CTX = 4096

# Set only while Settings.from_env builds an object from an explicit mapping instead of os.environ.
_EXPLICIT_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("mastery_settings_env", default=None)


class _EnvSource(EnvSettingsSource):
    """The environment source, reading an explicit mapping when :meth:`Settings.from_env` gives one."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        explicit = _EXPLICIT_ENV.get()
        if explicit is None:
            return super()._load_env_vars()
        return {key.lower(): value for key, value in explicit.items() if value != ""}


class Settings(BaseSettings):
    """Every ``MASTERY_*`` setting; the field ``foo_bar`` is the variable ``MASTERY_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    # -- assets and storage --------------------------------------------------------------------
    data_dir: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(), description="read-only mirror folders of datasets and models, os.pathsep-separated")
    cache: Path = Field(default=DEFAULT_CACHE,
                        description="downloads, embeddings and other caches (default ~/.cache/mastery)")
    model_store: Path | None = Field(default=None, description="trained-model registry folder (default <cache>/models)")
    model_registry_uri: str | None = Field(
        default=None, description="MLflow tracking/registry URI (sqlite:///path.db or http://127.0.0.1:5000): "
        "trained models are saved to and loaded from MLflow's model registry instead of model_store")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch, BLAS and FAISS (default: all)")
    # -- retrieval and agents ------------------------------------------------------------------
    kb_dir: Path | None = Field(default=None, description="knowledge-base folder (default <cache>/kb)")
    chroma_url: str | None = Field(default=None, description="a `chroma run` server; wins over MASTERY_KB_DIR")
    kb_collection: str | None = Field(default=None, description="collection the prediction API's POST /kb/query "
                                      "searches (unset: no /kb/query route)")
    kb_max_file_mb: float = Field(default=20.0, gt=0, allow_inf_nan=False,
                                  description="largest file a knowledge-base ingest accepts, in MB (10^6 bytes)")
    crewai_dir: Path | None = Field(default=None,
                                    description="CrewAI storage folder, user-only (default <cache>/crewai)")
    price_table: Path | None = Field(default=None, description="LLM price table file, JSON or TOML (default: all 0)")
    api_keys_file: Path | None = Field(default=None, description="hashed API keys of the HTTP services "
                                       "(default <cache>/api-keys.json; see 'mastery keys')")
    # -- research assistant ----------------------------------------------------------------------
    assistant_dir: Path | None = Field(default=None, description="the Research Assistant's sessions database "
                                       "and uploaded files (default <cache>/assistant)")
    assistant_guards: bool = Field(default=True, description="run the Research Assistant's guard layer before "
                                   "and after its LLM calls (false: skip every guard)")
    # -- LLM client (validated together by mastery.llm.settings.LLMSettings) ----------------------
    llm_backend: str = Field(default=BACKENDS[0], description="embedded, ollama or openai")
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL ending in /v1")
    llm_model: str | None = Field(default=None, description="model name (default: the backend's)")
    llm_api_key: SecretStr | None = Field(default=None, description="API key for the server (masked when shown)")
    llm_timeout: float = Field(default=DEFAULT_LLM_TIMEOUT_S, description="seconds per LLM call")
    llm_threads: int | None = Field(default=None, description="embedded server threads (default: MASTERY_THREADS)")
    llm_ctx: int = Field(default=DEFAULT_LLM_CTX, description="embedded context length in tokens")
    llm_call_log: str | None = Field(default=None, description="JSONL file that gets one line per LLM call")
    # -- research assistant ----------------------------------------------------------------------
    assistant_web: Literal["none", "searxng", "duckduckgo"] = Field(
        default="none", description="the assistant's web search backend: none (offline), searxng or duckduckgo")
    searxng_url: str | None = Field(default=None, description="SearXNG base URL for MASTERY_ASSISTANT_WEB=searxng")
    assistant_ui_key: SecretStr | None = Field(default=None, description="API key token the assistant UI signs in "
                                               "with, for local use (unset: the UI asks for one)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvSource(settings_cls), dotenv_settings

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # "MASTERY_X= " in a shell script or .env means "not set", as it always has here.
        if isinstance(data, dict):
            return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()
                    if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("data_dir", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(os.pathsep) if part.strip())
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_all(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.expanduser() for p in value)

    @field_validator("cache", "model_store", "kb_dir", "crewai_dir", "price_table", "api_keys_file",
                     "assistant_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("llm_backend", mode="after")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value.lower() not in BACKENDS:
            raise ValueError(f"LLM backend must be one of {', '.join(BACKENDS)}")
        return value.lower()

    @model_validator(mode="after")
    def _derived_defaults(self) -> Settings:
        if self.model_store is None:
            object.__setattr__(self, "model_store", self.cache / "models")  # frozen model: set once, here
        return self

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def load(cls, env_file: Path | str | None = "auto") -> Settings:
        """From the process environment and ``env_file`` ("auto": see :func:`env_file_path`)."""
        path = env_file_path() if env_file == "auto" else env_file
        try:
            return cls(_env_file=path)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """From ``env`` alone (no process environment, no .env file): for tests and explicit configs."""
        token = _EXPLICIT_ENV.set(dict(env))
        try:
            return cls(_env_file=None)
        except ValidationError as exc:
            raise _config_error(exc) from None
        finally:
            _EXPLICIT_ENV.reset(token)

    # -- convenience ----------------------------------------------------------------------------
    @property
    def kb_location(self) -> str | None:
        """Where the knowledge base is, if configured: the Chroma server, else the folder."""
        if self.chroma_url:
            return self.chroma_url
        return str(self.kb_dir) if self.kb_dir is not None else None


def env_var(field: str) -> str:
    """The variable behind a field: ``llm_model`` -> ``MASTERY_LLM_MODEL``."""
    return ENV_PREFIX + field.upper()


def env_file_path() -> Path | None:
    """The .env file to read: ``$MASTERY_ENV_FILE`` (must exist), else ``./.env`` when present."""
    named = os.environ.get(ENV_FILE_VAR, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_FILE_VAR} names {path}, which is not a file")
        return path
    local = Path(DEFAULT_ENV_FILE)
    return local.absolute() if local.is_file() else None


def get_settings() -> Settings:
    """The effective settings now (environment over .env over defaults), validated.

    Building one costs about 1 ms, and asset lookups ask many times per command, so the last one is
    kept for as long as the ``MASTERY_*`` variables and the .env file's bytes stay the same: a test's
    ``monkeypatch.setenv`` or an edited .env is seen on the next call, with no cache to clear.
    """
    global _last
    path = env_file_path()
    key = (tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX))),
           str(path) if path else None, path.read_bytes() if path else b"")
    if _last is None or _last[0] != key:
        _last = (key, Settings.load(path))
    return _last[1]


_last: tuple[Any, Settings] | None = None


def mask(secret: str) -> str:
    """``****`` plus the last two characters of a long secret (enough to tell two keys apart)."""
    return "****" + secret[-2:] if len(secret) >= 8 else "****"


def describe() -> list[dict[str, Any]]:
    """Every setting: its variable, effective value (secrets masked), source and purpose.

    ``source`` is ``environment``, the path of the .env file that set it, or ``default``.
    """
    from dotenv import dotenv_values

    path = env_file_path()
    settings = get_settings()
    environment = {k.upper(): v for k, v in os.environ.items()}
    in_file = {k.upper(): v for k, v in dotenv_values(path).items()} if path else {}
    rows = []
    for name, field in Settings.model_fields.items():
        var = env_var(name)
        if (environment.get(var) or "").strip():
            source = "environment"
        elif (in_file.get(var) or "").strip():
            source = str(path)
        else:
            source = "default"
        rows.append({"variable": var, "value": _shown(getattr(settings, name)), "source": source,
                     "help": field.description or ""})
    return rows


def _shown(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return mask(value.get_secret_value())
    if isinstance(value, tuple):
        return os.pathsep.join(str(v) for v in value)
    return str(value)


# pydantic's wording for the errors a user can make, keyed by error type
_PHRASES = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a float",
    "path_type": "must be a path",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
}


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error as one line naming the variable: ``MASTERY_THREADS must be an integer, got 'x'``."""
    err = exc.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err.get("loc") else "?"
    phrase = _PHRASES.get(err["type"])
    if phrase is not None:
        text = f"{env_var(field)} {phrase.format(**err.get('ctx', {}))}"
    else:
        text = f"{env_var(field)}: {str(err['msg']).removeprefix('Value error, ')}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{text}, got {err.get('input')!r}{more}")


__all__ = ["DEFAULT_CACHE", "ENV_FILE_VAR", "ENV_PREFIX", "Settings", "describe", "env_file_path", "env_var",
           "get_settings", "mask"]
