"""Parity: the exported graph against the PyTorch model it came from, on a batch of uneven lengths.

Every mismatch is gathered and reported in one ParityError; a miss fails the export, never a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.export.diagnose import which_is_wrong
from toolchain.runtime.checks import first_line
from toolchain.runtime.errors import ParityError, SourceError
from toolchain.runtime.manifest import read_manifest
from toolchain.runtime.model import load
from toolchain.runtime.tasks import task_spec

# Uneven lengths on purpose (one word to past the model's maximum) so padding and truncation bugs show.
PARITY_TEXTS = [
    "Hi.",
    "The quick brown fox jumps over the lazy dog.",
    "A remarkably assured debut, funny and moving in equal measure, with a final act that lands.",
    "Ünïcödé, emoji 🙂 and numbers 12345 — still text!",
    " ".join(["It rained all day, and the film dragged on without a single surprise."] * 6),
    "ok",
    " ".join(["a very long input that must be truncated to the model's maximum length"] * 60),
]


@dataclass
class ParityResult:
    variant: str
    atol: float
    max_abs_diff: float
    tokens_match: bool
    passed: bool
    texts: int = len(PARITY_TEXTS)  # how many texts (encoders) or prompts (decoders) were compared
    padding_diff: float = 0.0  # encoders: max |graph's batch row - PyTorch on that item alone|
    mismatch: str = "tokens differ from PyTorch's (tokenizer ids or greedy continuation)"  # when not tokens_match
    diagnosis: str = ""  # on a miss: whether the graph or the reference is wrong (export/diagnose.py)

    def metrics(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "atol": self.atol, "tokens_match": self.tokens_match,
                "texts": self.texts, "padding_diff": self.padding_diff}


class Reference:
    """The PyTorch model and tokenizer of an artifact's source, built with transformers."""

    def __init__(self, source_path: str | Path, task: str, trust_remote_code: bool = False):
        import torch
        import transformers

        self.torch = torch
        spec = task_spec(task)
        path = Path(source_path)
        if not (path / "config.json").is_file():
            raise SourceError(f"the PyTorch source {path} is gone; parity needs it, re-export from an existing model dir.")
        from toolchain.export.source import needs_remote_code, read_json

        if not trust_remote_code and needs_remote_code(read_json(path / "config.json")):
            raise SourceError(f"the PyTorch source {path} runs its own Python code (config.json auto_map); pass "
                              "--trust-remote-code if you trust its authors.")
        auto = getattr(transformers, spec.auto_class)
        try:
            self.model = auto.from_pretrained(str(path), trust_remote_code=trust_remote_code).eval()
        except ValueError as exc:  # "Unrecognized configuration class ...": the architecture lacks this task's head
            raise SourceError(f"{path} cannot be loaded as {spec.auto_class} for task {task!r} "
                              f"({first_line(exc)}); export it for a task its architecture supports.") from None
        self.tokenizer, self.processor = PREPROCESSORS[spec.inputs](transformers, path, trust_remote_code)

    @property
    def config(self) -> Any:
        return self.model.config

    def outputs(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(**{k: self.torch.from_numpy(v) for k, v in feeds.items()})
        return getattr(out, output).float().numpy()

    def pixel_values(self, images: list[Any]) -> np.ndarray:
        """Image tasks: the Hugging Face image processor's pixel values for RGB PIL images."""
        return np.asarray(self.processor(images=images, return_tensors="np")["pixel_values"], dtype=np.float32)

    def token_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def greedy_ids(self, sources: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Encoder-decoders: transformers' greedy generate() on each source's token ids, without the decoder
        start token and cut before EOS."""
        torch, out = self.torch, []
        config = getattr(self.model, "generation_config", None) or self.model.config
        eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        for src in sources:
            ids = torch.tensor([src])
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          num_beams=1, max_new_tokens=max_new_tokens)[0, 1:].tolist()
            out.append(gen[: next((i for i, t in enumerate(gen) if t in eos), len(gen))])
        return out


def _text_preprocessor(transformers: Any, path: Path, trust_remote_code: bool) -> tuple[Any, Any]:
    return transformers.AutoTokenizer.from_pretrained(str(path), use_fast=True, trust_remote_code=trust_remote_code), None


def _image_preprocessor(transformers: Any, path: Path, trust_remote_code: bool) -> tuple[Any, Any]:
    """The slow (Pillow) image processor: the one the runtime's preprocessing reproduces; and the tokenizer of a
    model that writes text (a captioner) where the dir has one."""
    if not (path / "preprocessor_config.json").is_file():
        raise SourceError(f"{path} has no preprocessor_config.json (the image processor the runtime's preprocessing "
                          "follows); save one beside the model with processor.save_pretrained(dir).")
    tok = _text_preprocessor(transformers, path, trust_remote_code)[0] if (path / "tokenizer.json").is_file() else None
    try:
        return tok, transformers.AutoImageProcessor.from_pretrained(str(path), use_fast=False,
                                                                    trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path} has no usable image processor ({first_line(exc)}); save one beside the model "
                          "(processor.save_pretrained(dir) writes preprocessor_config.json).") from None


# (tokenizer, image processor) of the source, by what the task reads (TaskSpec.inputs).
PREPROCESSORS = {"text": _text_preprocessor, "image": _image_preprocessor}


GEN_PROMPTS = ["ROMEO:", "To be, or not to be, that is", "A", "The quick brown fox jumps over the lazy dog, and then the"]
GEN_TOKENS = 24


def check_variant(root: Path, variant: str, reference: Reference, atol: float) -> ParityResult:
    """Compare one variant with PyTorch, the way its task needs (a registry keyed by runtime method)."""
    model = load(root, variant=variant, provider="cpu")
    return PARITY[model.manifest.task](model, variant, reference, atol)


def _encoder_parity(model, variant: str, reference: Reference, atol: float) -> ParityResult:
    """Graph outputs against PyTorch at the non-padding positions of an uneven batch; token ids too. A model
    that reads its padding (the manifest's tokenizer.pad_batches is false) is run, as the runtime runs it, one
    text at a time."""
    spec = task_spec(model.manifest.task)
    if not model.manifest.tokenizer.pad_batches:
        return _unpadded_parity(model, variant, reference, atol, spec.output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the over-long text is truncated on purpose
        feeds, mask = model.encode(PARITY_TEXTS)
    onnx_out = model.run_feeds(feeds)
    torch_out = reference.outputs(feeds, spec.output)
    if onnx_out.shape != torch_out.shape:
        diff = float("inf")
    elif onnx_out.ndim == 3:  # token states: compare where the mask is 1
        diff = float(np.abs(onnx_out - torch_out)[mask.astype(bool)].max())
    else:
        diff = float(np.abs(onnx_out - torch_out).max())
    ours = [list(row[m.astype(bool)]) for row, m in zip(feeds["input_ids"], mask)]
    tokens_match = same_ids(ours, reference, model)
    alone = _alone_diff(onnx_out, feeds, mask, reference, spec.output) if onnx_out.shape == torch_out.shape else diff
    diagnosis = which_is_wrong(reference, [(feeds, onnx_out, mask if onnx_out.ndim == 3 else None)], spec.output,
                               atol) if atol < diff < float("inf") else ""
    return ParityResult(variant, atol, diff, tokens_match, bool(max(diff, alone) <= atol and tokens_match),
                        padding_diff=alone, diagnosis=diagnosis)


def same_ids(ours: list, reference: Any, model: Any) -> bool:
    """The runtime's token ids of PARITY_TEXTS equal the PyTorch side's tokenizer's."""
    return ours == reference.token_ids(PARITY_TEXTS, model.manifest.max_length)


def _unpadded_parity(model, variant: str, reference: Reference, atol: float, output: str) -> ParityResult:
    """Each parity text alone through the graph and through PyTorch: outputs within atol, the same token ids."""
    diff, ours = 0.0, []
    for text in PARITY_TEXTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the over-long text is truncated on purpose
            feeds, _ = model.encode([text])
        onnx_out, torch_out = model.run_feeds(feeds), reference.outputs(feeds, output)
        same = onnx_out.shape == torch_out.shape
        diff = max(diff, float(np.abs(onnx_out - torch_out).max()) if same else float("inf"))
        ours.append(list(feeds["input_ids"][0]))
    tokens_match = same_ids(ours, reference, model)
    return ParityResult(variant, atol, diff, tokens_match, bool(diff <= atol and tokens_match))


def _alone_diff(onnx_out: np.ndarray, feeds: dict[str, np.ndarray], mask: np.ndarray, reference, output: str) -> float:
    """A padded batch must give each item what it gives alone: the graph's rows (real positions, whichever side the
    padding is on) against PyTorch on each item unpadded, numbering its positions itself (so position_ids the
    runtime derives from the mask are checked too). Catches a model (or graph) that reads the padding."""
    diff = 0.0
    for i, real in enumerate(mask.astype(bool)):
        one = {k: np.ascontiguousarray(v[i : i + 1, real]) for k, v in feeds.items() if k != "position_ids"}
        alone = reference.outputs(one, output)[0]
        row = onnx_out[i, real] if onnx_out.ndim == 3 else onnx_out[i]
        diff = max(diff, float(np.abs(row - alone).max()) if row.shape == alone.shape else float("inf"))
    return diff


def _greedy_parity(model, variant: str, reference: Reference, atol: float) -> ParityResult:
    """Decoders: greedy continuations equal PyTorch's token for token (one prompt at a time and as one
    left-padded uneven batch), prompt logits within atol, and the same prompt token ids."""
    torch = reference.torch
    gen = model.generator
    pad = reference.tokenizer.pad_token_id if reference.tokenizer.pad_token_id is not None else gen.pad_id
    n_new = min(GEN_TOKENS, max(1, gen.context // 4))
    room = gen.context - n_new  # prompts keep their last `room` tokens, as the runtime does
    theirs, ours_ids, hf_ids, diff, cases = [], [], [], 0.0, []
    for prompt in GEN_PROMPTS:
        hf = reference.tokenizer(prompt)["input_ids"][-room:]
        hf_ids.append(list(hf))
        ids_t = torch.tensor([hf])
        with torch.inference_mode():
            out = reference.model.generate(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=n_new,
                                           do_sample=False, num_beams=1, repetition_penalty=1.0, pad_token_id=pad)
            torch_logits = reference.model(input_ids=ids_t).logits.float().numpy()
        new = out[0, len(hf):].tolist()
        eos = next((i for i, t in enumerate(new) if t in gen.eos), len(new))
        theirs.append(reference.tokenizer.decode(new[:eos], skip_special_tokens=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a prompt longer than a tiny context is cut on purpose
            ids, mask = gen.prompt_ids([prompt], n_new)
        ours_ids.append(ids[0].tolist())
        if ids.shape == ids_t.shape:
            cases.append(({"input_ids": ids_t.numpy()}, gen.prompt_logits(ids, mask), None))
            diff = max(diff, float(np.abs(cases[-1][1] - torch_logits).max()))
        else:
            diff = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_by_one = [model.generate(p, max_new_tokens=n_new) for p in GEN_PROMPTS]
        batched = model.generate(GEN_PROMPTS, max_new_tokens=n_new)
    tokens_match = one_by_one == theirs and batched == theirs and ours_ids == hf_ids
    passed = bool(diff <= atol and tokens_match)
    return ParityResult(variant, atol, diff, tokens_match, passed, len(GEN_PROMPTS),
                        diagnosis="" if passed or not cases else which_is_wrong(reference, cases, "logits", atol))


# Sources of the kinds the bundled translation data has, plus text far from it and one over-long source.
TRANSLATE_SOURCES = ["March 3, 2021", "the twenty-fifth of November, 2026", "Nov 25 '26", "25/11/2026",
                     "one thousand two hundred and five", "Hi.", " ".join(["the third of May, 1999"] * 40)]
TRANSLATE_TOKENS = 24


def _translate_parity(model, variant: str, reference: Any, atol: float) -> ParityResult:
    """Encoder-decoders: greedy output ids equal PyTorch's (its uncached greedy decoding of each source
    alone), for every source alone and for the uneven batch of all of them; the same source token ids."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the over-long source is truncated on purpose
        ids, mask = model.source_ids(TRANSLATE_SOURCES)
    lengths = mask.sum(axis=1)
    ours = [list(map(int, row[:n])) for row, n in zip(ids, lengths)]
    theirs = [reference.greedy_ids([src], TRANSLATE_TOKENS)[0] for src in ours]
    alone = [model.decode_ids(ids[i : i + 1, :n], mask[i : i + 1, :n], TRANSLATE_TOKENS)[0]
             for i, n in enumerate(lengths)]
    batched = model.decode_ids(ids, mask, TRANSLATE_TOKENS)
    same_source = ours == reference.token_ids(TRANSLATE_SOURCES, model.manifest.max_length)
    tokens_match = same_source and alone == theirs and batched == theirs
    return ParityResult(variant, atol, 0.0 if tokens_match else float("inf"), tokens_match, tokens_match,
                        len(TRANSLATE_SOURCES))


PIXEL_ATOL = 1e-5  # the runtime's pixel values against the image processor's (float32 rounding only)


def _image_parity(model, variant: str, reference: Reference, atol: float) -> ParityResult:
    """Image tasks: logits within atol of PyTorch's on the same pixel values (the batch, and each image alone),
    and the runtime's pixel values equal to the Hugging Face image processor's (resize, rescale, normalise)."""
    from toolchain.export.vision import parity_images
    from toolchain.runtime.images import to_rgb

    images = parity_images()
    feeds, _ = model.encode(images)
    (name, pixels), = feeds.items()
    output = task_spec(model.manifest.task).output
    onnx_out = model.run_feeds(feeds)
    torch_out = reference.outputs(feeds, output)
    diff = float(np.abs(onnx_out - torch_out).max()) if onnx_out.shape == torch_out.shape else float("inf")
    alone = max(float(np.abs(onnx_out[i] - reference.outputs({name: pixels[i : i + 1]}, output)[0]).max())
                for i in range(len(pixels))) if onnx_out.shape == torch_out.shape else diff
    theirs = reference.pixel_values([to_rgb(im) for im in images])  # the same explicit RGB conversion
    same = theirs.shape == pixels.shape and float(np.abs(theirs - pixels).max()) <= PIXEL_ATOL
    return ParityResult(variant, atol, diff, same, bool(max(diff, alone) <= atol and same), len(images), alone,
                        "the runtime's pixel values differ from the Hugging Face image processor's (the manifest's "
                        "preprocess section)")


CAPTION_TOKENS = 24


def _caption_parity(model, variant: str, reference: Reference, atol: float) -> ParityResult:
    """Captioners: greedy caption ids equal PyTorch generate()'s on every parity image alone and as one batch; the
    first step's logits within atol; the runtime's pixel values equal to the image processor's."""
    from toolchain.export.vision import parity_images
    from toolchain.runtime.images import to_rgb

    torch, images = reference.torch, parity_images()
    feeds, _ = model.encode(images)
    (_, pixels), = feeds.items()
    eos = set(model.seq2seq.eos)
    theirs = []
    for i in range(len(pixels)):
        with torch.inference_mode():
            gen = reference.model.generate(pixel_values=torch.from_numpy(pixels[i : i + 1]), do_sample=False,
                                           num_beams=1, max_new_tokens=CAPTION_TOKENS)[0, 1:].tolist()
        theirs.append(gen[: next((k for k, t in enumerate(gen) if t in eos), len(gen))])
    alone = [model.decode_pixels(pixels[i : i + 1], CAPTION_TOKENS)[0] for i in range(len(pixels))]
    batched = model.decode_pixels(pixels, CAPTION_TOKENS)
    start = torch.full((len(pixels), 1), model.seq2seq.bos, dtype=torch.long)
    with torch.inference_mode():
        torch_logits = reference.model(pixel_values=torch.from_numpy(pixels), decoder_input_ids=start).logits
    ours = model.run_feeds(feeds)
    torch_logits = torch_logits[:, 0].float().numpy()
    diff = float(np.abs(ours - torch_logits).max()) if ours.shape == torch_logits.shape else float("inf")
    expected = reference.pixel_values([to_rgb(im) for im in images])
    same_pixels = expected.shape == pixels.shape and float(np.abs(expected - pixels).max()) <= PIXEL_ATOL
    tokens_match = same_pixels and alone == theirs and batched == theirs
    return ParityResult(variant, atol, diff, tokens_match, bool(diff <= atol and tokens_match), len(images),
                        mismatch="greedy caption ids differ from PyTorch generate()'s" if same_pixels else
                        "the runtime's pixel values differ from the Hugging Face image processor's (the manifest's "
                        "preprocess section)")


# One parity check per task (a key of toolchain.runtime.tasks.TASKS); a new task adds its entry here.
PARITY = {"feature-extraction": _encoder_parity, "text-classification": _encoder_parity,
          "text-generation": _greedy_parity, "text2text-generation": _translate_parity,
          "image-classification": _image_parity, "image-to-text": _caption_parity}


def raise_misses(results: list[ParityResult], root: Path) -> None:
    misses = [r for r in results if not r.passed]
    if misses:
        parts = [
            f"{r.variant}: max |onnx - torch| = {r.max_abs_diff:.3g} (tolerance {r.atol:g})"
            + ("" if r.padding_diff <= r.atol or r.max_abs_diff > r.atol else
               f", but a padded batch differs from each item alone by {r.padding_diff:.3g} (the model reads "
               "padding: mask it, or take the state at the last real token)")
            + ("" if r.tokens_match else f", {r.mismatch}")
            + (f": {r.diagnosis}" if r.diagnosis else "")
            for r in misses
        ]
        raise ParityError(f"{root} does not match PyTorch: " + "; ".join(parts) + ".")
