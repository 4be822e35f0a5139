"""sweep: a family of sizes from one recipe -> the scaling-law fit and the quality/latency/size front. Entry: sweep()."""

from toolchain.sweep.core import sweep
from toolchain.sweep.report import format_summary

__all__ = ["format_summary", "sweep"]
