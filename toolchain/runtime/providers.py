"""Execution-provider negotiation: CUDA only when ONNX Runtime's CUDA provider really initialises.

ONNX Runtime silently drops a provider that fails to initialise and runs on CPU; the provider in use
is read back from ``session.get_providers()``, never assumed from what was asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ProviderError

log = logging.getLogger("toolchain.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_NAMES = {"cpu": CPU, "cuda": CUDA}
CHOICES = ("auto", "cpu", "cuda")

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


@dataclass
class Negotiated:
    """The session ONNX Runtime built, and what it actually runs on."""

    session: Any
    provider: str  # "cpu" or "cuda"
    requested: str
    fallback_reason: str | None = None


def _short(provider: str) -> str:
    return {v: k for k, v in PROVIDER_NAMES.items()}.get(provider, provider)


def negotiate(
    requested: str,
    make_session: Callable[[list[str]], Any],
    available: list[str],
) -> Negotiated:
    """Build a session for ``requested`` ("auto", "cpu", "cuda").

    ``make_session(providers)`` builds an ``onnxruntime.InferenceSession``; ``available`` is
    ``onnxruntime.get_available_providers()``. Both are parameters so the logic is testable on CPU.
    """
    if requested not in CHOICES:
        raise ProviderError(f"provider {requested!r} is not known; use one of {', '.join(CHOICES)}.")
    if requested == "cpu":
        return Negotiated(make_session([CPU]), "cpu", requested)
    if CUDA not in available:
        reason = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
        if requested == "cuda":
            raise ProviderError(f"provider 'cuda' was requested but {reason}; use provider='cpu' or 'auto'.")
        return Negotiated(make_session([CPU]), "cpu", requested, reason)
    session = make_session([CUDA, CPU])
    in_use = session.get_providers()
    if in_use and in_use[0] == CUDA:
        return Negotiated(session, "cuda", requested)
    reason = (
        "ONNX Runtime's CUDA provider did not initialise (no usable NVIDIA GPU, driver, CUDA or cuDNN); "
        f"providers in use: {in_use}"
    )
    if requested == "cuda":
        raise ProviderError(f"provider 'cuda' was requested but {reason}; use provider='cpu' or 'auto'.")
    _warn_once(f"falling back to CPU: {reason}")
    return Negotiated(session, _short(in_use[0]) if in_use else "cpu", requested, reason)
