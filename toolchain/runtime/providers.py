"""Execution-provider negotiation: CUDA only when ONNX Runtime's CUDA provider really initialises.

ONNX Runtime silently drops a provider that fails to initialise and runs on CPU; the provider in use
is read back from ``session.get_providers()``, never assumed from what was asked for.
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from .checks import is_int, warn_once
from .errors import InputError, ProviderError

log = logging.getLogger("toolchain.runtime")
_warned: set[str] = set()  # the fallback warnings already logged (tests reset it)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_NAMES = {"cpu": CPU, "cuda": CUDA}
CHOICES = ("auto", "cpu", "cuda")

# Device nodes an NVIDIA driver creates (/dev/nvidia0, /dev/nvidiactl, ...); WSL2 exposes its GPUs as /dev/dxg.
DEVICE_NODES = ("/dev/nvidia*", "/dev/dxg")


def has_nvidia_device() -> bool:
    """Whether this machine shows any sign of an NVIDIA GPU (a driver's device node).

    Without one, CUDA failing to start under ``provider="auto"`` is the expected case, not news: the
    fallback is recorded in ``info()["fallback_reason"]`` but not logged as a warning on every load.
    Module-level so tests can monkeypatch it."""
    return any(glob.glob(pattern) for pattern in DEVICE_NODES)


ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(value: Any) -> int:
    """A byte count from an int or a string such as "4GB", "512MiB" or "1e9"."""
    if is_int(value):
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
    if not match or match.group(2) not in _UNITS:
        raise InputError(f"gpu_mem_limit {value!r} is not a size; give bytes or a number with a unit such as 4GB or 512MiB.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class CudaOptions:
    """Settings for ONNX Runtime's CUDA provider: ``load(dir, provider="cuda", cuda=CudaOptions(...))`` or a dict.

    device_id: the GPU, as CUDA numbers them. gpu_mem_limit: bytes ONNX Runtime's memory arena may hold
    (None: no limit; "4GB" and "512MiB" are read too). cudnn_conv_algo_search: EXHAUSTIVE (best kernels,
    slower first run), HEURISTIC or DEFAULT. use_tf32: TF32 tensor cores for fp32 MatMul/Conv on Ampere and
    newer (about 1e-3 relative error, several times faster). check_placement: profile the warm-up run at
    load to find nodes ONNX Runtime silently placed on CPU (reported by ``Model.info()``).
    """

    device_id: int = 0
    gpu_mem_limit: int | None = None
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    use_tf32: bool = True
    check_placement: bool = True

    def __post_init__(self) -> None:
        if self.gpu_mem_limit is not None:
            object.__setattr__(self, "gpu_mem_limit", parse_bytes(self.gpu_mem_limit))
        if isinstance(self.cudnn_conv_algo_search, str):
            object.__setattr__(self, "cudnn_conv_algo_search", self.cudnn_conv_algo_search.upper())
        checks = [
            (is_int(self.device_id) and self.device_id >= 0,
             f"device_id must be an int >= 0 (the GPU's index as CUDA numbers them), got {self.device_id!r}"),
            (self.gpu_mem_limit is None or self.gpu_mem_limit > 0,
             f"gpu_mem_limit must be a positive number of bytes or None (no limit), got {self.gpu_mem_limit!r}"),
            (self.cudnn_conv_algo_search in ALGO_SEARCH,
             f"cudnn_conv_algo_search must be one of {', '.join(ALGO_SEARCH)}, got {self.cudnn_conv_algo_search!r}"),
            (isinstance(self.use_tf32, bool), f"use_tf32 must be True or False, got {self.use_tf32!r}"),
            (isinstance(self.check_placement, bool), f"check_placement must be True or False, got {self.check_placement!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{message}; fix the CUDA options.")

    @classmethod
    def coerce(cls, value: Any) -> "CudaOptions":
        """None (the defaults), a CudaOptions, or a dict of its fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise InputError(f"CUDA option {unknown[0]!r} is not known; use {', '.join(sorted(known))}.")
            return cls(**value)
        raise InputError(f"cuda must be a CudaOptions, a dict of its fields or None, got {type(value).__name__}.")

    def provider_options(self) -> dict[str, str]:
        """The options as ONNX Runtime's CUDA provider takes them (strings)."""
        out = {"device_id": str(self.device_id), "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
               "use_tf32": "1" if self.use_tf32 else "0"}
        if self.gpu_mem_limit is not None:
            out["gpu_mem_limit"] = str(self.gpu_mem_limit)
        return out

    def not_applied(self, actual: dict[str, Any]) -> list[str]:
        """The options a session's CUDA provider reports differently from these (``get_provider_options()``).

        ONNX Runtime's Python layer retries a session whose providers failed to start with the CUDA
        provider's defaults, so a bad device_id can silently become device 0."""
        wanted = self.provider_options()
        same = {"device_id": _same_int, "gpu_mem_limit": _same_int, "use_tf32": _same_int,
                "cudnn_conv_algo_search": lambda a, b: str(a).upper() == str(b).upper()}
        return [f"{k}={wanted[k]} (in use: {actual[k]})" for k, check in same.items()
                if k in wanted and k in actual and not check(wanted[k], actual[k])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _same_int(a: Any, b: Any) -> bool:
    try:
        return int(a) == int(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def session_providers(names: list[str], cuda: CudaOptions) -> list[Any]:
    """Provider names as ``InferenceSession(providers=...)`` takes them: CUDA with its options."""
    return [(n, cuda.provider_options()) if n == CUDA else n for n in names]


class CudaStartError(ProviderError):
    """Raised by a session factory when ONNX Runtime raised while starting the CUDA provider
    (the graph itself loads on CPU)."""


@dataclass
class Negotiated:
    """The session ONNX Runtime built, and what it actually runs on."""

    session: Any
    provider: str  # "cpu" or "cuda"
    requested: str
    fallback_reason: str | None = None
    cuda: CudaOptions | None = None  # the options in effect when provider is "cuda"


def _short(provider: str) -> str:
    return {v: k for k, v in PROVIDER_NAMES.items()}.get(provider, provider)


def negotiate(
    requested: str,
    make_session: Callable[[list[str]], Any],
    available: list[str],
    cuda: CudaOptions | dict | None = None,
) -> Negotiated:
    """Build a session for ``requested`` ("auto", "cpu", "cuda").

    ``make_session(providers)`` builds an ``onnxruntime.InferenceSession`` (raising CudaStartError when ONNX
    Runtime raised while starting CUDA); ``available`` is ``onnxruntime.get_available_providers()``. Both
    are parameters so the logic is testable on CPU. "cuda" never falls back; "auto" falls back to CPU only
    when CUDA cannot start as asked, and logs why once, unless the machine has no NVIDIA device at all
    (``has_nvidia_device()``): then CPU is expected, and the reason is only recorded.
    """
    if requested not in CHOICES:
        raise ProviderError(f"provider {requested!r} is not known; use one of {', '.join(CHOICES)}.")
    options = CudaOptions.coerce(cuda)
    if requested == "cpu":
        return Negotiated(make_session([CPU]), "cpu", requested)
    session, reason, surprising = _start_cuda(make_session, available, options)
    if reason is None:
        return Negotiated(session, "cuda", requested, cuda=options)
    if requested == "cuda":
        raise ProviderError(f"provider 'cuda' was requested but {reason}; use provider='cpu' or 'auto'.")
    if surprising and has_nvidia_device():
        warn_once(log, f"falling back to CPU: {reason}", _warned)
    elif surprising:  # no GPU here at all: CPU is what anyone would expect, so no warning on every load
        reason = f"{reason} (this machine has no NVIDIA device: no /dev/nvidia*)"
        log.debug("using CPU: %s", reason)
    if session is None:
        session = make_session([CPU])
    in_use = session.get_providers()
    return Negotiated(session, _short(in_use[0]) if in_use else "cpu", requested, reason)


def cuda_problem(make_session: Callable[[list[str]], Any], available: list[str],
                 cuda: CudaOptions | dict | None = None) -> str | None:
    """Why CUDA cannot run as asked here (what negotiate("cuda") would refuse with), or None when it can."""
    return _start_cuda(make_session, available, CudaOptions.coerce(cuda))[1]


def _start_cuda(make_session, available: list[str], options: CudaOptions) -> tuple[Any, str | None, bool]:
    """(session or None, why CUDA is not in use as asked or None, whether that deserves a warning)."""
    if CUDA not in available:
        return None, "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)", False
    try:
        session = make_session([CUDA, CPU])
    except CudaStartError as exc:
        return None, f"ONNX Runtime's CUDA provider failed to start ({exc})", True
    in_use = session.get_providers()
    if not in_use or in_use[0] != CUDA:
        return session, ("ONNX Runtime's CUDA provider did not initialise (no usable NVIDIA GPU, driver, CUDA or "
                         f"cuDNN); providers in use: {in_use}"), True
    getter = getattr(session, "get_provider_options", None)
    missed = options.not_applied((getter() or {}).get(CUDA, {})) if callable(getter) else []
    if missed:
        return None, (f"ONNX Runtime could not start CUDA with the requested options and fell back to its defaults: "
                      f"{', '.join(missed)}"), True
    return session, None, False
