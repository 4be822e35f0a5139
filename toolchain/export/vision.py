"""Export for image tasks: the manifest's fields and ``preprocess`` section from the model's Hugging Face image
processor, and the images parity runs on (export/parity.py's image check).

The preprocess section is what the torch-free runtime applies (runtime/images.py); parity checks that its pixel
values equal the image processor's on every parity image, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.data import shapes
from toolchain.export.families import graph_pad
from toolchain.export.seq2seq_hf import decoder_start_and_eos
from toolchain.runtime.errors import ExportError
from toolchain.runtime.manifest import TokenizerInfo
from toolchain.runtime.sections import RESAMPLE, Preprocess
from toolchain.runtime.tasks import task_spec

TOKENIZER_FILE = "tokenizer.json"

PARITY_SCENES = 6  # shapes scenes, plus the odd sizes and modes below
PARITY_SEED = 16


def _three(value: Any, what: str, name: str) -> tuple[float, ...]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value or [])
    if len(values) != 3:
        raise ExportError(f"{name}'s image processor gives {what} {value!r}; the runtime needs 3 numbers (R, G, B).")
    return tuple(float(v) for v in values)


def preprocess_section(processor: Any, name: str) -> Preprocess:
    """The runtime's preprocess settings from a transformers image processor (ViT-style: a fixed height x width
    resize, rescale, normalise); processors that crop or resize by the shortest edge are refused."""
    cfg = processor.to_dict()
    size = cfg.get("size") or {}
    if not {"height", "width"} <= set(size) or cfg.get("do_center_crop"):
        raise ExportError(f"{name}'s image processor ({cfg.get('image_processor_type')}) resizes to {size}"
                          + (" and crops" if cfg.get("do_center_crop") else "") + "; the runtime resizes to a fixed "
                          "height x width only (ViT, DeiT, BEiT style): save an image processor with size "
                          "{'height': H, 'width': W} and no crop.")
    resample = cfg.get("resample", 2)
    if not isinstance(resample, int) or not 0 <= resample < len(RESAMPLE):
        raise ExportError(f"{name}'s image processor asks for resample {resample!r}; use one of Pillow's filters 0-5.")
    return Preprocess(height=int(size["height"]), width=int(size["width"]), resize=bool(cfg.get("do_resize", True)),
                      resample=RESAMPLE[resample], rescale=bool(cfg.get("do_rescale", True)),
                      rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
                      normalize=bool(cfg.get("do_normalize", True)),
                      mean=_three(cfg.get("image_mean", 0.5), "image_mean", name),
                      std=_three(cfg.get("image_std", 0.5), "image_std", name))


def _positions(config: Any) -> int:
    """The vision encoder's sequence length (patches + the class token) where the config says, else 1."""
    image, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if isinstance(image, int) and isinstance(patch, int) and patch > 0:
        return (image // patch) ** 2 + 1
    return 1


def image_fields(source: Any, reference: Any, task: str, out: Any) -> dict[str, Any]:
    """What the manifest says about a transformers image model: labels, the preprocess section, and for captioners
    (image-to-text) the caption tokenizer (saved into OUT) and the decoder's start and end tokens."""
    config = reference.model.config
    if task_spec(task).method == "caption":
        return {**caption_fields(source, reference, out), "model_type": config.model_type,
                "architecture": (config.architectures or [None])[0],
                "sections": {"preprocess": preprocess_section(reference.processor, source.name).to_dict()}}
    id2label = getattr(config, "id2label", None) or {}
    return {"labels": [str(id2label[i]) for i in sorted(id2label)] or None, "max_length": _positions(config),
            "tokenizer": None, "model_type": config.model_type, "architecture": (config.architectures or [None])[0],
            "sections": {"preprocess": preprocess_section(reference.processor, source.name).to_dict()}}


def caption_fields(source: Any, reference: Any, out: Any) -> dict[str, Any]:
    """A captioner's tokenizer.json (saved into OUT: the runtime decodes caption ids with it), its start and end
    tokens, and max_length: the decoder's positions (no labels)."""
    tok, config = reference.tokenizer, reference.model.config
    if tok is None or not getattr(tok, "is_fast", False):
        raise ExportError(f"{source.name} has no fast tokenizer (tokenizer.json) beside the model; the runtime decodes "
                          "captions with it: save the caption tokenizer into the model dir.")
    tok.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    pad_id, pad_token = graph_pad(tok, config.decoder)
    start, eos = decoder_start_and_eos(getattr(reference.model, "generation_config", None) or config)
    positions = getattr(config.decoder, "n_positions", None) or getattr(config.decoder, "max_position_embeddings", 0)
    generation = {"bos_token_id": start, "eos_token_ids": eos, "max_positions": int(positions) or None}
    return {"labels": None, "max_length": int(positions) or None, "generation": generation,
            "tokenizer": TokenizerInfo(file=TOKENIZER_FILE, pad_id=pad_id, pad_token=pad_token).to_dict()}


def parity_images() -> list[Any]:
    """Generated shapes scenes, one resized to an odd non-square size, one grayscale and one RGBA (PIL images),
    so that resizing and mode conversion are part of what parity checks."""
    rng = np.random.default_rng(PARITY_SEED)
    images = [shapes.render(shapes.draw_scene(rng, heldout=k % 2 == 1)) for k in range(PARITY_SCENES)]
    odd = images[0].resize((97, 61))
    gray = images[1].convert("L")
    rgba = images[2].copy()
    rgba.putalpha(160)
    return images + [odd, gray, rgba]
