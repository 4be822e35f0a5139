"""bench: latency, throughput and memory of an artifact's variants, against PyTorch. Entry: bench()."""

from toolchain.bench.core import bench

__all__ = ["bench"]
