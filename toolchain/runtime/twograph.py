"""What every encoder + one-step-decoder runtime shares (Translator, Captioner): the decoding loop over its two
sessions, always IO-bound, and an info() that names both graphs' files."""

from __future__ import annotations

from typing import Any

from .base import Model
from .seq2seq import Seq2Seq
from .seq2seq_io import ENCODER


class TwoGraphModel(Model):
    """A Model whose variant is an encoder graph and a decoder-step graph; subclasses set ``_seq2seq`` in _prepare."""

    _seq2seq: Seq2Seq

    @property
    def io_binding(self) -> bool:
        return True  # the decoder always runs through IO binding (seq2seq.py)

    @property
    def seq2seq(self) -> Seq2Seq:
        """The decoding loop over this model's two sessions (``decode()``, ``greedy_steps()``), for benches."""
        return self._seq2seq

    def info(self) -> dict[str, Any]:
        """Model.info() (whose ``file`` is the decoder's), plus every component's file and the encoder's providers."""
        v = self.manifest.variant(self.variant)
        return {**super().info(),
                "files": {name: str(self.manifest.root / c.file) for name, c in v.components.items()},
                "encoder_providers": list(self._sessions[ENCODER].get_providers())}
