"""The PyTorch side of parity, chosen by the source's kind (``REFERENCES``): a transformers model
(parity.Reference) or a user's own nn.Module rebuilt from its module dir (ModuleReference).

Every reference has the same interface: ``model``, ``config`` (the transformers config, or None),
``outputs(feeds, output)`` (numpy in, numpy out) and ``token_ids(texts, max_length)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from toolchain.export.modules import TOKENIZER_FILE, is_module_dir, read_module_dir, run_module, runs_own_code
from toolchain.export.parity import Reference
from toolchain.export.seq2seq_module import greedy_uncached, pad_sources
from toolchain.runtime.errors import SourceError
from toolchain.runtime.tasks import task_spec


class ModuleReference:
    """A custom module from its module dir (safetensors weights), and its tokenizers-library tokenizer."""

    config = None  # no transformers config: exporters decide on the source kind

    def __init__(self, source_path: str | Path, task: str, trust_remote_code: bool = False):
        import torch
        from tokenizers import Tokenizer

        self.torch = torch
        path = Path(source_path)
        if not is_module_dir(path):
            raise SourceError(f"the PyTorch source {path} is gone; parity needs it, re-export from an existing "
                              "module dir.")
        self.dir = read_module_dir(path)
        if runs_own_code(self.dir.entry) and not trust_remote_code:
            raise SourceError(f"the PyTorch source {path} is built by its own Python code ({self.dir.entry}); pass "
                              "--trust-remote-code only if you trust its authors.")
        if self.dir.task != task:
            raise SourceError(f"{path} was trained for {self.dir.task!r}, not {task!r}; pass --task {self.dir.task} "
                              "or leave --task out.")
        if not (path / TOKENIZER_FILE).is_file():
            raise SourceError(f"{path} has no {TOKENIZER_FILE}; re-run 'toolchain train' so the module dir has its "
                              "tokenizer.")
        self.model, self.spec = self.dir.build()
        self.tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        if task_spec(task).method == "classify":
            self._check_labels(task_spec(task).output)

    def _check_labels(self, output: str) -> None:
        """One label per class: the runtime names each score by the manifest's labels."""
        example = {k: v.numpy() for k, v in self.spec.example([2]).items()}
        width = self.outputs(example, output).shape[-1]
        labels = self.dir.labels
        if not labels or len(labels) != width:
            raise SourceError(f"{self.dir.path} names labels {labels} for a module with {width} classes; write "
                              "one label per class into the module dir (re-run 'toolchain train' with the recipe's "
                              "labels).")

    def outputs(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        with self.torch.inference_mode():
            out = run_module(self.model, self.spec, {k: self.torch.from_numpy(v) for k, v in feeds.items()})
        return out[output].float().numpy()

    def token_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        tok = self.tokenizer
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        return [list(e.ids) for e in tok.encode_batch(texts, add_special_tokens=True)]

    def greedy_ids(self, sources: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Encoder-decoders: the module's uncached greedy decoding of each batch of source ids."""
        ids, mask = pad_sources(sources, self.dir.pad_id)
        return greedy_uncached(self.model, self.spec, ids, mask, max_new_tokens)


# One reference per source kind (Source.kind, SourceInfo.kind); a new kind of source adds its entry here.
REFERENCES: dict[str, Callable[..., Any]] = {
    "transformers": Reference,
    "sentence-transformers": Reference,
    "module": ModuleReference,
}


def reference_for(kind: str, source_path: str | Path, task: str, trust_remote_code: bool = False) -> Any:
    """The PyTorch reference for a source of KIND at SOURCE_PATH, for TASK."""
    if kind not in REFERENCES:
        raise SourceError(f"the artifact's source kind {kind!r} is not known; use one of {', '.join(REFERENCES)} "
                          "(re-export the artifact).")
    return REFERENCES[kind](source_path, task, trust_remote_code=trust_remote_code)
