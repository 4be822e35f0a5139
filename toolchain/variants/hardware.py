"""Target detection and per-target quantization presets (avx2, avx512-vnni, arm64, cuda).

Integer kernels differ by instruction set: x86 without VNNI can saturate u8*s8 products (AVX2's
vpmaddubsw adds two of them into int16), so int8 weights need a reduced 7-bit range there, or uint8
weights (the u8u8 kernel widens to 16 bits first and never saturates); VNNI and ARM64 dot-product
kernels need no such care. ``row_weights`` lists the per-row int8-dynamic weight formats (rowquant.py)
that are exact on the target; quantize gates each and keeps the fastest on the machine at hand.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from toolchain.runtime.errors import ToolchainError


@dataclass(frozen=True)
class Preset:
    """How to quantize for one target."""

    target: str
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on x86 without VNNI
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    int4_accuracy_level: int = 4  # MatMulNBits computes in int8 on CPU
    row_weights: tuple[str, ...] = ("u8s8",)  # int8-dynamic weight formats exact here (rowquant.WEIGHT_FORMATS)


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    PRESETS[preset.target] = preset
    return preset


NO_SATURATION = ("u8u8", "u8s8-7bit")  # x86 without VNNI: full 8-bit uint8 weights, or 7-bit int8 weights
register(Preset("avx2", reduce_range=True, row_weights=NO_SATURATION))
register(Preset("avx512", reduce_range=True, row_weights=NO_SATURATION))
register(Preset("avx512-vnni"))
register(Preset("arm64", activation_type="QInt8"))
register(Preset("cuda", per_channel=True, activation_type="QInt8"))
register(Preset("generic", reduce_range=True, row_weights=NO_SATURATION))


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def detect_target() -> str:
    """The preset name for this machine's CPU."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags or "avx_vnni" in flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def exact_on(weights: str | None, host: str) -> bool:
    """Whether a variant in weight format WEIGHTS, gated on a HOST CPU, was gated on the numbers its target computes:
    u8u8 and 7-bit weights never saturate, so they are exact everywhere; full-range u8s8 only where VNNI or ARM dot
    products run it (judge the avx512-vnni preset on such a CPU). Other modes' formats are not integer GEMMs here."""
    return weights != "u8s8" or host in ("avx512-vnni", "arm64")


def preset_for(target: str | None = None) -> Preset:
    name = target or detect_target()
    if name not in PRESETS:
        raise ToolchainError(f"target {name!r} is not known; use one of {', '.join(PRESETS)}.")
    return PRESETS[name]
