"""Typed ways in and out of the model registry: torch modules, scikit-learn (skops), Hugging Face folders.

A torch model is registered as its state dict in ``model.safetensors`` plus, in the manifest's
config, its ``architecture``: ``{"module": "mastery.vision.unet", "class": "UNet", "kwargs": {...}}``.
:func:`load_torch_module` rebuilds it from that alone, through the ``build_from_manifest`` function
of its domain module. Only the modules in :data:`BUILDER_MODULES` are ever imported for that, so a
manifest cannot make the loader import arbitrary code.

A *probe* records, at training time, a fixed input and what the model returned for it; after a
reload :func:`run_torch_probe` feeds the same input again, so "it loads" can be checked as "it
behaves the same".
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mastery.core.errors import RegistryError
from mastery.ops.registry import LoadedModel, ModelRef, RegistryBase, open_registry

WEIGHTS = "model.safetensors"
PROBE_VALUES = 64  # outputs kept per probe: enough to catch a wrong weight, small enough for a manifest
# Domain modules whose build_from_manifest may rebuild a registered torch model.
BUILDER_MODULES = ("mastery.nn.models", "mastery.vision.cnn", "mastery.vision.unet", "mastery.vision.backbones",
                   "mastery.text.charlm")


def _registry(registry: RegistryBase | None) -> RegistryBase:
    return registry if registry is not None else open_registry()


# -- torch -------------------------------------------------------------------------------------
def architecture(module: Any, cls: str, **kwargs: Any) -> dict[str, Any]:
    """The manifest entry that rebuilds a model: ``architecture("mastery.vision.unet", "UNet", width=16)``."""
    if module not in BUILDER_MODULES:
        raise RegistryError(f"{module} has no registered build_from_manifest; known: {', '.join(BUILDER_MODULES)}")
    return {"module": module, "class": cls, "kwargs": kwargs}


def _seeded_input(spec: Mapping[str, Any]) -> Any:
    """A probe input from its spec: ``{"randn": shape, "seed": s}`` or ``{"randint": shape, "high": n, "seed": s}``."""
    import torch

    gen = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    if "randn" in spec:
        return torch.randn(tuple(spec["randn"]), generator=gen)
    if "randint" in spec:
        return torch.randint(0, int(spec["high"]), tuple(spec["randint"]), generator=gen)
    raise RegistryError(f"unknown probe input spec {dict(spec)}")


def _forward(model: Any, x: Any) -> Any:
    """model(x) in eval mode and float32: a model with a ``bf16`` switch (CifarCNN, UNet) runs with it off,
    as a rebuilt model does (the training machine's bf16 choice does not travel with the weights)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    bf16 = getattr(model, "bf16", None)
    if bf16 is not None:
        model.bf16 = False
    try:
        with torch.inference_mode():
            out = model(x.to(device))
    finally:
        if bf16 is not None:
            model.bf16 = bf16
    if isinstance(out, tuple):  # recurrent models return (logits, state)
        out = out[0]
    return out.float().cpu()


def torch_probe(model: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``model`` (in eval mode) on the seeded input ``spec``; the first outputs, for the manifest."""
    out = _forward(model, _seeded_input(spec))
    return {"input": dict(spec), "shape": list(out.shape), "output": out.flatten()[:PROBE_VALUES].tolist()}


def run_torch_probe(model: Any, probe: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(recorded, now) outputs of the manifest's probe, for the caller to compare."""
    out = _forward(model, _seeded_input(probe["input"]))
    if list(out.shape) != list(probe["shape"]):
        raise RegistryError(f"probe output shape {list(out.shape)} differs from the recorded {probe['shape']}")
    return list(probe["output"]), out.flatten()[:PROBE_VALUES].tolist()


def save_torch_module(name: str, model: Any, *, arch: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                      metrics: Mapping[str, float] | None = None, data_assets: Iterable[str] = (),
                      probe_input: Mapping[str, Any] | None = None, description: str = "",
                      registry: RegistryBase | None = None) -> ModelRef:
    """Register ``model``'s state dict as safetensors with the architecture that rebuilds it."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    probe = torch_probe(model, probe_input) if probe_input is not None else None
    with tempfile.TemporaryDirectory(prefix="mastery-register-") as tmp:
        path = Path(tmp) / WEIGHTS
        save_file(state, str(path), metadata={"format": "pt"})
        return _registry(registry).save(name, path, kind="torch", config={**(config or {}), "architecture": dict(arch)},
                                        metrics=metrics, data_assets=data_assets, description=description,
                                        probe=probe)


def load_torch_state(name: str, *, registry: RegistryBase | None = None) -> dict[str, Any]:
    """The verified state dict of a registered torch model (tensors only: safetensors never unpickles)."""
    from safetensors.torch import load_file

    loaded = _registry(registry).load(name)
    _expect_kind(loaded, "torch")
    return load_file(str(loaded.path / WEIGHTS))


def build_module(arch: Mapping[str, Any]) -> Any:
    """A freshly initialised module from a manifest's ``architecture`` (no weights yet)."""
    module = arch.get("module")
    if module not in BUILDER_MODULES:
        raise RegistryError(f"architecture module {module!r} is not one the registry rebuilds from; "
                            f"known: {', '.join(BUILDER_MODULES)}")
    return importlib.import_module(str(module)).build_from_manifest(dict(arch))


def load_torch_module(name: str, *, registry: RegistryBase | None = None,
                      device: str = "cpu") -> tuple[Any, LoadedModel]:
    """(module in eval mode with the registered weights, the verified registry entry)."""
    from safetensors.torch import load_file

    loaded = _registry(registry).load(name)
    _expect_kind(loaded, "torch")
    arch = loaded.config.get("architecture")
    if not arch:
        raise RegistryError(f"{loaded.ref}: the manifest's config has no 'architecture' to rebuild the model from")
    model = build_module(arch)
    model.load_state_dict(load_file(str(loaded.path / WEIGHTS)), strict=True)
    return model.to(device).eval(), loaded


# -- scikit-learn, Hugging Face, GGUF -----------------------------------------------------------
def save_skops(name: str, model: Any, *, config: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None, data_assets: Iterable[str] = (),
               extra_files: Mapping[str, Path] | None = None, probe: Mapping[str, Any] | None = None,
               description: str = "", registry: RegistryBase | None = None) -> ModelRef:
    """Register a scikit-learn model saved with skops as ``model.skops`` (plus any side files)."""
    import skops.io as sio

    with tempfile.TemporaryDirectory(prefix="mastery-register-") as tmp:
        path = Path(tmp) / "model.skops"
        sio.dump(model, path)
        files = {"model.skops": path, **dict(extra_files or {})}
        return _registry(registry).save(name, files, kind="skops", config=config, metrics=metrics,
                                        data_assets=data_assets, probe=probe, description=description)


def load_skops(name: str, trusted_types: Sequence[str], *, registry: RegistryBase | None = None) -> Any:
    """Load a registered skops model, refusing any type outside ``trusted_types`` (an allow-list in code)."""
    import skops.io as sio

    loaded = _registry(registry).load(name)
    _expect_kind(loaded, "skops")
    found = [rel for rel in sorted(loaded.manifest["files"]) if rel.endswith(".skops")]
    if len(found) != 1:
        raise RegistryError(f"{loaded.ref} holds {len(found)} .skops files; expected exactly one")
    path = loaded.path / found[0]
    refused = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted_types))
    if refused:
        raise RegistryError(f"{loaded.ref}: model.skops needs types outside the allow-list: {', '.join(refused)}")
    return sio.load(path, trusted=list(trusted_types))


def hf_folder(name: str, *, registry: RegistryBase | None = None) -> Path:
    """The verified folder of a registered Hugging Face model, for ``from_pretrained`` / sentence-transformers."""
    loaded = _registry(registry).load(name)
    _expect_kind(loaded, "hf")
    return loaded.path


def gguf_file(name: str, *, registry: RegistryBase | None = None) -> Path:
    """The verified ``.gguf`` file of a registered model, for llama.cpp."""
    loaded = _registry(registry).load(name)
    _expect_kind(loaded, "gguf")
    return next(loaded.path / rel for rel in sorted(loaded.manifest["files"]) if rel.endswith(".gguf"))


def _expect_kind(loaded: LoadedModel, kind: str) -> None:
    if loaded.kind != kind:
        raise RegistryError(f"{loaded.ref} is a {loaded.kind} model, not {kind}")


def note_registered(report: Any, ref: ModelRef, *, registry: RegistryBase | None = None) -> None:
    """Add the registry entry to a lab's report: which ``name@version`` and where it lives."""
    reg = _registry(registry)
    manifest = reg.manifest(str(ref))
    report.note(f"Registered the trained model as `{ref}` (kind {manifest['kind']}, sha256 "
                f"{manifest['sha256'][:12]}) in {reg.location}: `mastery models show {ref}` prints its manifest, and "
                "services load it by that name.")
