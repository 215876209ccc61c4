"""bf16 autocast only where the device runs it natively: the choice, made at run time, and why.

bfloat16 autocast roughly triples matmul and convolution speed on a CPU with AVX-512 BF16 or AMX
(oneDNN's native bf16 kernels) and on a GPU with tensor cores (compute capability 8 or newer). Elsewhere
it is a trap: on an AVX2-only CPU oneDNN emulates bf16 (a 512x512 matmul measured 500x slower than
float32 here under ``ONEDNN_MAX_CPU_ISA=AVX2``) or has no kernel at all (the LSTM primitive fails with
"could not create a primitive descriptor"). So a lab's ``bf16`` field is ``auto | on | off`` and
:func:`decide_bf16` turns it into a plain bool plus a one-line reason the report shows.

Detection on CPU: the kernel's flag list (``/proc/cpuinfo`` on Linux) must name ``avx512_bf16`` or
``amx_bf16``; torch's own dispatch level (``torch.backends.cpu.get_cpu_capability()``, which honours
``ATEN_CPU_CAPABILITY``) must be AVX512 or better; and an ``ONEDNN_MAX_CPU_ISA`` cap below
``AVX512_CORE_BF16`` switches oneDNN's bf16 kernels off, so it counts as "no native bf16" too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mastery.core.report import Report

log = logging.getLogger(__name__)

BF16Choice = Literal["auto", "on", "off"]

# oneDNN's CPU ISA names in increasing order (oneDNN docs, "CPU Dispatcher Control"); the first with native
# bf16 dot products is AVX512_CORE_BF16. AVX2_VNNI_2 only converts to and from bf16.
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
               "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL")
_FIRST_BF16_ISA = ONEDNN_ISAS.index("AVX512_CORE_BF16")
# What torch.backends.cpu.get_cpu_capability() may return; only the AVX512 family routes bf16 to oneDNN.
_TORCH_BF16_CAPABLE = ("AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX")


@dataclass(frozen=True)
class Precision:
    """The resolved autocast choice: ``bf16`` is what the library functions receive."""

    bf16: bool
    reason: str  # one line, e.g. "bf16 autocast on: CPU has AMX-BF16"
    choice: str = "auto"

    @property
    def dtype_name(self) -> str:
        return "bf16 autocast" if self.bf16 else "float32"

    def record(self, report: Report) -> None:
        """Say in the report what ran and why: the device field gains the dtype, the notes the reason."""
        if self.dtype_name not in report.device:
            report.device = f"{report.device}, {self.dtype_name}"
        report.note(f"Precision (`bf16={self.choice}`): {self.reason}.")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux); empty where there is no such file."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling; every core lists the same set
            return frozenset(value.split())
    return frozenset()


def torch_cpu_capability() -> str:
    """torch's dispatch level on this CPU ("AVX512", "AVX2", "DEFAULT", ...), honouring ATEN_CPU_CAPABILITY."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """The ISA oneDNN is capped at by ONEDNN_MAX_CPU_ISA (or the older DNNL_ spelling), upper-case; None if uncapped."""
    env = os.environ if environ is None else environ
    # Not a MASTERY_* setting: oneDNN itself reads this variable, so this reads exactly what oneDNN sees.
    value = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def cpu_bf16_support(flags: frozenset[str] | set[str], capability: str, isa_cap: str | None) -> tuple[bool, str]:
    """Whether oneDNN runs native bf16 kernels on this CPU, and the one-line reason. Pure: no probing."""
    if "amx_bf16" in flags:
        what = "AMX-BF16"
    elif "avx512_bf16" in flags:
        what = "AVX512-BF16"
    else:
        return False, "CPU lacks AVX512-BF16/AMX, float32 is faster"
    if capability.upper() not in _TORCH_BF16_CAPABLE:
        return False, f"CPU has {what} but torch dispatches at {capability} (ATEN_CPU_CAPABILITY?), float32 is faster"
    if isa_cap is not None and isa_cap in ONEDNN_ISAS and ONEDNN_ISAS.index(isa_cap) < _FIRST_BF16_ISA:
        return False, (f"CPU has {what} but ONEDNN_MAX_CPU_ISA={isa_cap} caps oneDNN below AVX512_CORE_BF16, "
                       "float32 is faster")
    return True, f"CPU has {what}"


def cuda_bf16_support(bf16_supported: bool, capability: tuple[int, int], name: str = "GPU") -> tuple[bool, str]:
    """Tensor-core bf16 needs compute capability 8.0 (Ampere) or newer; older GPUs only emulate it."""
    major, minor = capability
    if not bf16_supported:
        return False, f"{name} (sm_{major}{minor}) has no bf16 support, float32 is faster"
    if major < 8:
        return False, f"{name} (sm_{major}{minor}) lacks bf16 tensor cores (needs compute capability 8.0+)"
    return True, f"{name} (sm_{major}{minor}) has bf16 tensor cores"


def device_bf16_support(device: Any) -> tuple[bool, str]:
    """Probe the real device (a torch.device or a string such as "cpu", "cuda:0")."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return cpu_bf16_support(cpu_flags(), torch_cpu_capability(), onednn_isa_cap())
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:  # newer torch counts emulation as "supported" unless told not to
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            supported = torch.cuda.is_bf16_supported()
        return cuda_bf16_support(supported, torch.cuda.get_device_capability(index),
                                 torch.cuda.get_device_name(index))
    return False, f"no native bf16 path known for device type {device.type!r}"


def decide_bf16(choice: str, device: Any, *, allow_emulated: bool = True,
                support: tuple[bool, str] | None = None) -> Precision:
    """Resolve a config's ``bf16`` field (auto | on | off) for ``device``.

    ``auto`` follows the device; ``on`` forces bf16 even where it is emulated (slow), unless
    ``allow_emulated`` is False, for models whose kernels do not exist in emulation (oneDNN's LSTM);
    ``off`` is float32. ``support`` injects a (native, reason) pair instead of probing (tests).
    """
    from mastery.core.errors import ConfigError

    if choice not in ("auto", "on", "off"):
        raise ConfigError(f"bf16 must be auto, on or off, got {choice!r}")
    if choice == "off":
        return Precision(False, "bf16 autocast off: asked for (bf16=off)", choice)
    native, why = support if support is not None else device_bf16_support(device)
    if native:
        return Precision(True, f"bf16 autocast on: {why}", choice)
    if choice == "on" and allow_emulated:
        log.warning("bf16=on on a device without native bf16 (%s): expect a large slow-down", why)
        return Precision(True, f"bf16 autocast on as asked (bf16=on), although {why}", choice)
    if choice == "on":
        return Precision(False, f"bf16 autocast off despite bf16=on: {why}, and this model has no emulated "
                                "bf16 kernel (oneDNN's LSTM fails)", choice)
    return Precision(False, f"bf16 autocast off: {why}", choice)


def bf16_on_reload(trained_with_bf16: bool, device: Any = "cpu") -> bool:
    """Whether a model rebuilt from the registry should autocast to bf16 on ``device``.

    A model trained with bf16 autocast keeps it only where the device runs bf16 natively (then its outputs
    match the training machine's); elsewhere bf16 is emulated and many times slower, so it runs float32.
    """
    return trained_with_bf16 and decide_bf16("auto", device).bf16
