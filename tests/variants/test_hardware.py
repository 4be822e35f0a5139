"""hardware: per-target quantization presets and CPU target detection."""

from __future__ import annotations

import pytest

from toolchain.variants import hardware
from toolchain.variants.hardware import PRESETS, detect_target, preset_for
from toolchain.runtime import ToolchainError


def test_reduce_range_only_where_u8s8_can_saturate():
    assert preset_for("avx2").reduce_range is True
    assert preset_for("avx512").reduce_range is True
    assert preset_for("avx512-vnni").reduce_range is False
    assert preset_for("arm64").reduce_range is False


def test_preset_fields():
    assert preset_for("arm64").activation_type == "QInt8"
    assert preset_for("avx2").activation_type == "QUInt8"
    for name, preset in PRESETS.items():
        assert preset.target == name
        assert preset.weight_type in ("QInt8", "QUInt8")


def test_unknown_target():
    with pytest.raises(ToolchainError, match=r"target 'tpu' is not known; use one of avx2, .*arm64"):
        preset_for("tpu")


def test_no_target_means_detected(monkeypatch):
    monkeypatch.setattr(hardware, "detect_target", lambda: "arm64")
    assert preset_for().target == "arm64"
    assert preset_for(None).target == "arm64"


def test_detect_target_on_this_machine():
    assert detect_target() in PRESETS


@pytest.mark.parametrize("machine, flags, expected", [
    ("aarch64", {"avx2"}, "arm64"),  # ARM wins before any flag is read
    ("arm64", set(), "arm64"),
    ("x86_64", {"sse4_2", "avx2", "avx512f", "avx512_vnni"}, "avx512-vnni"),
    ("x86_64", {"avx2", "avx512f", "avx512vnni"}, "avx512-vnni"),
    ("x86_64", {"avx2", "avx_vnni"}, "avx512-vnni"),
    ("x86_64", {"avx2", "avx512f"}, "avx512"),
    ("x86_64", {"sse4_2", "avx2", "fma"}, "avx2"),
    ("AMD64", {"avx2"}, "avx2"),
    ("x86_64", {"sse4_2"}, "generic"),
    ("x86_64", set(), "generic"),
])
def test_detect_target_branches(monkeypatch, machine, flags, expected):
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: set(flags))
    assert detect_target() == expected
    assert expected in PRESETS


def test_cpu_flags_reads_flags_line(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\n")
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert hardware.cpu_flags() == {"fpu", "sse", "avx2", "avx512f"}


def test_cpu_flags_without_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "Path", lambda p: tmp_path / "missing")
    assert hardware.cpu_flags() == set()


def test_row_formats_never_saturate_where_vnni_is_missing():
    from toolchain.variants.hardware import exact_on
    from toolchain.variants.rowquant import WEIGHT_FORMATS

    for name in ("avx2", "avx512", "generic"):
        assert set(preset_for(name).row_weights) == {"u8u8", "u8s8-7bit"}
        assert all(exact_on(f, name) for f in preset_for(name).row_weights)
    assert preset_for("avx512-vnni").row_weights == ("u8s8",) and exact_on("u8s8", "avx512-vnni")
    assert not exact_on("u8s8", "avx2") and exact_on("u8s8", "arm64")
    for preset in PRESETS.values():
        assert set(preset.row_weights) <= set(WEIGHT_FORMATS)
