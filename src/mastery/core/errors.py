"""Errors a user can act on.

Every exception here carries a one-line message that names the problem; the CLI prints it
without a traceback and exits with code 2.
"""

from __future__ import annotations


class MasteryError(Exception):
    """Base class for errors caused by input, configuration or the environment."""


class ConfigError(MasteryError):
    """A preset, an override or a config value is invalid."""


class LabNotFound(MasteryError):
    """No lesson has that id."""


class LabNotImplemented(MasteryError):
    """The lesson is in the roadmap but its lab is not built yet."""


class AssetError(MasteryError):
    """An asset is unknown, missing, or could not be fetched."""


class ChecksumMismatch(AssetError):
    """A file's sha256 differs from the registry's."""


class RegistryError(MasteryError):
    """A trained model is unknown, or cannot be saved to or loaded from the model registry."""


class ModelIntegrityError(RegistryError):
    """A registered model's file or training-data digest differs from its manifest."""


class MissingExtra(MasteryError):
    """An optional dependency is not installed."""


def require(module: str, extra: str):
    """Import ``module`` or raise a MissingExtra that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra(
            f"'{module}' is not installed; install it with: pip install 'mastery[{extra}]'"
        ) from exc
