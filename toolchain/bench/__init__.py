"""bench: latency, throughput and memory of an artifact's variants, against PyTorch. Entry: bench().

measure_variants and record_latency are the quick A/B timing that quantize and optimize use."""

from toolchain.bench.core import bench, format_table, measure_variants, record_latency

__all__ = ["bench", "format_table", "measure_variants", "record_latency"]
