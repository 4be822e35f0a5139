"""Typed settings of `toolchain serve` and `toolchain map`, checked once when made (no Ray imported here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from toolchain.fleet.openai_api import Limits
from toolchain.runtime.errors import ToolchainError


def _positive(owner: str, name: str, value: object, integer: bool = True, zero: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < 0 or (value == 0 and not zero):
        kind = "an integer" if integer else "a number"
        raise ToolchainError(f"{owner}.{name} must be {kind} {'>= 0' if zero else '> 0'}, got {value!r}.")


@dataclass(frozen=True)
class ServeSettings:
    """How `toolchain serve` deploys: replicas per artifact, where they listen, how encoders batch, the caps."""

    replicas: int = 1  # service replicas, each answering HTTP and holding every artifact once
    host: str = "127.0.0.1"  # loopback by default: reachable from this machine only
    port: int = 8000
    variant: str = "auto"
    cpus_per_replica: float = 1.0  # Ray CPUs a replica reserves per artifact (its ONNX Runtime threads: at least 1)
    max_batch_size: int = 32  # requests one encoder call may batch together (@serve.batch)
    batch_wait_s: float = 0.005  # how long the first request waits for others to batch with
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        for name in ("replicas", "port", "max_batch_size"):
            _positive("ServeSettings", name, getattr(self, name))
        _positive("ServeSettings", "cpus_per_replica", self.cpus_per_replica, integer=False, zero=True)
        _positive("ServeSettings", "batch_wait_s", self.batch_wait_s, integer=False, zero=True)

    def limits_dict(self) -> dict[str, int]:
        return asdict(self.limits)


@dataclass(frozen=True)
class MapSettings:
    """How `toolchain map` runs: the text column, rows per runtime call, model actors and their CPUs."""

    column: str = "text"
    batch_size: int = 256  # rows per map_batches call (the runtime batches inside it again)
    actors: int | None = None  # model actors; None: one per CPU of the cluster
    cpus_per_actor: float = 1.0
    variant: str = "auto"

    def __post_init__(self) -> None:
        _positive("MapSettings", "batch_size", self.batch_size)
        if self.actors is not None:
            _positive("MapSettings", "actors", self.actors)
        _positive("MapSettings", "cpus_per_actor", self.cpus_per_actor, integer=False)
        if not isinstance(self.column, str) or not self.column:
            raise ToolchainError(f"MapSettings.column must name the text column, got {self.column!r}.")
