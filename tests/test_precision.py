"""bf16 autocast only where the device runs it natively (mastery.core.precision)."""

import os
import subprocess
import sys

import pytest

from mastery.core import precision
from mastery.core.config import apply_overrides
from mastery.core.errors import ConfigError
from mastery.core.report import Report

SAPPHIRE = {"fpu", "avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"}
COOPER = {"avx2", "avx512f", "avx512_bf16"}
EPYC_ZEN3 = {"fpu", "avx", "avx2", "fma", "sha_ni"}
SKYLAKE = {"avx2", "avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize(("flags", "native", "word"), [
    (SAPPHIRE, True, "AMX-BF16"), (COOPER, True, "AVX512-BF16"), (EPYC_ZEN3, False, "lacks"),
    (SKYLAKE, False, "lacks"), (set(), False, "lacks")])
def test_cpu_flags_decide(flags, native, word):
    ok, why = precision.cpu_bf16_support(frozenset(flags), "AVX512" if "avx512f" in flags else "AVX2", None)
    assert ok is native and word in why


@pytest.mark.parametrize(("cap", "native"), [
    ("AVX2", False), ("AVX512_CORE", False), ("AVX512_CORE_VNNI", False), ("AVX2_VNNI_2", False),
    ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True), ("ALL", True), (None, True)])
def test_onednn_isa_cap_below_bf16_turns_it_off(cap, native):
    ok, why = precision.cpu_bf16_support(frozenset(SAPPHIRE), "AVX512", cap)
    assert ok is native
    assert ("ONEDNN_MAX_CPU_ISA" in why) is (not native)


def test_torch_dispatch_level_below_avx512_turns_it_off():
    ok, why = precision.cpu_bf16_support(frozenset(SAPPHIRE), "AVX2", None)
    assert not ok and "AVX2" in why


def test_isa_cap_is_read_case_insensitively_from_either_spelling():
    assert precision.onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == "AVX2"
    assert precision.onednn_isa_cap({"DNNL_MAX_CPU_ISA": " Avx512_Core "}) == "AVX512_CORE"
    assert precision.onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": ""}) is None
    assert precision.onednn_isa_cap({}) is None


def test_cpu_flags_parse_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("supported", "cc", "native"), [
    (True, (9, 0), True), (True, (8, 0), True), (True, (7, 5), False), (False, (6, 1), False)])
def test_cuda_needs_bf16_and_tensor_cores(supported, cc, native):
    ok, why = precision.cuda_bf16_support(supported, cc, "Test GPU")
    assert ok is native and f"sm_{cc[0]}{cc[1]}" in why


def test_decide_auto_on_off():
    yes, no = (True, "CPU has AMX-BF16"), (False, "CPU lacks AVX512-BF16/AMX, float32 is faster")
    assert precision.decide_bf16("auto", "cpu", support=yes) == precision.Precision(
        True, "bf16 autocast on: CPU has AMX-BF16", "auto")
    assert precision.decide_bf16("auto", "cpu", support=no).reason == (
        "bf16 autocast off: CPU lacks AVX512-BF16/AMX, float32 is faster")
    assert precision.decide_bf16("off", "cpu", support=yes).bf16 is False
    forced = precision.decide_bf16("on", "cpu", support=no)
    assert forced.bf16 and "bf16=on" in forced.reason
    # An LSTM has no emulated bf16 kernel in oneDNN: "on" cannot force it there.
    lstm = precision.decide_bf16("on", "cpu", support=no, allow_emulated=False)
    assert not lstm.bf16 and "LSTM" in lstm.reason
    with pytest.raises(ConfigError, match="bf16 must be auto, on or off"):
        precision.decide_bf16("true", "cpu")


def test_record_names_the_choice_in_the_report():
    report = Report(lab="lxx", title="t", preset="tiny", config={}, seed=0, device="cpu (2 cores, x86_64)")
    choice = precision.decide_bf16("auto", "cpu", support=(False, "CPU lacks AVX512-BF16/AMX, float32 is faster"))
    choice.record(report)
    assert report.device == "cpu (2 cores, x86_64), float32"
    assert report.notes == ["Precision (`bf16=auto`): bf16 autocast off: CPU lacks AVX512-BF16/AMX, float32 is "
                            "faster."]


def test_this_machine_gives_a_consistent_reason():
    choice = precision.decide_bf16("auto", "cpu")
    flags = precision.cpu_flags()
    assert choice.reason.startswith("bf16 autocast on: " if choice.bf16 else "bf16 autocast off: ")
    if choice.bf16:  # on only where the kernel lists a native bf16 instruction set
        assert flags & {"avx512_bf16", "amx_bf16"}
        assert ("AMX-BF16" in choice.reason) is ("amx_bf16" in flags)


def test_emulated_avx2_cpu_chooses_float32():
    """Under ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN limited to an AVX2 CPU's kernels) auto picks float32."""
    code = ("from mastery.core.precision import decide_bf16; p = decide_bf16('auto', 'cpu'); "
            "print(p.bf16, p.reason, sep='|')")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    bf16, reason = out.stdout.strip().split("|")
    assert bf16 == "False" and reason.startswith("bf16 autocast off: ")


@pytest.mark.parametrize("lab_id", ["l09", "l12", "l14", "l16", "l20"])
def test_labs_take_auto_on_off(lab_id):
    from mastery.core.labs import load_lab

    config = load_lab(lab_id).config("tiny")
    assert config.bf16 == "auto"
    assert apply_overrides(config, ["bf16=off"]).bf16 == "off"
    with pytest.raises(ConfigError, match="expected one of auto, on, off"):
        apply_overrides(config, ["bf16=true"])
