"""The image-to-text stage: a transformers VisionEncoderDecoderModel (a ViT encoder and a GPT-2 decoder with
cross-attention, both built from the recipe's configs) trained from scratch on an image table with captions.

The caption tokenizer is trained here with the ``tokenizers`` library: the captions are a few dozen words, so a
word-level vocabulary ([PAD] [BOS] [EOS] [UNK] and every training word) is exact and short (one token a word,
so a caption is ~11 decoder steps, not ~40 with bytes). The image processor (resize, rescale, normalise) and the
tokenizer are saved beside the weights; export turns them into the artifact's preprocess section and
tokenizer.json. Exact match and BLEU-4 of greedy captions are reported on dev and test, and on their rows with
and without held-out colour-shape pairs (a ``heldout`` column) separately.

``[train] augment = ["redraw"]`` (shapes captions only): each training caption is drawn as a new picture every time it
is used (data/shapes.py ``redraw``, ``render_fast``), so 40 epochs show 40 different pictures of each caption instead
of one picture 40 times: the model cannot memorise its training pictures (the fixed 12,000 ended at training loss
0.001 and test seen exact match 0.744; redrawn, 0.882: models/captioner-shapes.toml).

Recipe ``[source] config``: ``{encoder = {model_type = "vit", ...}, decoder = {model_type = "gpt2", ...}}``; the
two hidden sizes must be equal (no projection between them, so the exported decoder reads the encoder's states
as they are).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.data import shapes
from toolchain.data.images import image_paths
from toolchain.data.metrics import bleu4, exact_match
from toolchain.runtime.errors import ToolchainError
from toolchain.train.fit import fit, save_model
from toolchain.train.recipe import CAPTION_AUGMENTATIONS, Recipe, RecipeError, Split
from toolchain.train.smoke import SMOKE, smoke_limit, smoke_settings

ARCHITECTURE = "vision-encoder-decoder"
HELDOUT_COLUMN = "heldout"  # 1 where a row shows a combination never seen in training (data/shapes.py)
NORMALISE = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"  # ids 0, 1, 2, 3
MAX_CAPTION_TOKENS = 24  # greedy captions at evaluation stop here (the longest shapes caption is 11 words)
REDRAW = CAPTION_AUGMENTATIONS[0]  # [train] augment: each training caption drawn as a new picture when used


@dataclass
class Captions:
    """One split: image files, their captions and (where the table says) which rows are held-out combinations."""

    path: Path
    images: list[Path]
    captions: list[str]
    heldout: list[bool] | None


def read_captions(recipe: Recipe, split: Split) -> Captions:
    """A split's image and caption columns (images drawn first where the table says how, data/images.py)."""
    path = recipe.resolve(split.path)
    if split.image is None or split.target is None:
        raise RecipeError(f"{recipe.path}: the {split.path} split needs an 'image' and a 'target' column for "
                          "image-to-text (such as image = \"image\", target = \"caption\").")
    if not path.is_file():
        raise RecipeError(f"data file {path} does not exist; fix 'path' in the recipe or add the file under models/data/.")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE)
        columns = reader.fieldnames or []
        for want in (split.image, split.target):
            if want not in columns:
                raise RecipeError(f"{path} has columns {columns}, not {want!r}; fix the column names in the recipe.")
        rows = [row for _, row in zip(range(split.limit or 10**12), reader)]
    if not rows:
        raise RecipeError(f"data file {path} has no examples (empty split); give it at least one row.")
    captions = [(row[split.target] or "").strip() for row in rows]
    empty = next((i for i, c in enumerate(captions) if not c), None)
    if empty is not None:
        raise RecipeError(f"{path} line {empty + 2}: the {split.target!r} column is empty; give every image a caption.")
    heldout = [row[HELDOUT_COLUMN].strip() == "1" for row in rows] if HELDOUT_COLUMN in columns else None
    return Captions(path, image_paths(path, rows, split.image), captions, heldout)


def caption_tokenizer(captions: list[str], max_length: int):
    """A word-level tokenizer of the training captions (lowercased, split on whitespace and punctuation), "text
    [EOS]" when encoding, as a transformers fast tokenizer (saved as tokenizer.json)."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    raw = Tokenizer(models.WordLevel(unk_token=UNK))
    raw.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    raw.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=[PAD, BOS, EOS, UNK]))
    raw.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, raw.token_to_id(EOS))])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"])


def build_captioner(recipe: Recipe, tok) -> tuple[Any, Any]:
    """(model, image processor): a VisionEncoderDecoderModel from the recipe's encoder and decoder configs."""
    import transformers

    given = recipe.source.config
    if recipe.source.architecture != ARCHITECTURE or not {"encoder", "decoder"} <= set(given):
        raise RecipeError(f"{recipe.path}: an image-to-text recipe builds [source] architecture = \"{ARCHITECTURE}\" "
                          "from config = {encoder = {model_type = \"vit\", ...}, decoder = {model_type = \"gpt2\", ...}}.")
    enc_cfg, dec_cfg = dict(given["encoder"]), dict(given["decoder"])
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id, "decoder_start_token_id": tok.bos_token_id}
    try:
        encoder = transformers.AutoConfig.for_model(enc_cfg.pop("model_type", "vit"), **enc_cfg)
        decoder = transformers.AutoConfig.for_model(dec_cfg.pop("model_type", "gpt2"), is_decoder=True,
                                                    add_cross_attention=True, **{**dec_cfg, **ids})
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{recipe.path}: [source] config does not build an encoder and a decoder ({exc}); use "
                          "transformers config keys.") from None
    if encoder.hidden_size != decoder.hidden_size:
        raise RecipeError(f"{recipe.path}: the encoder's hidden size {encoder.hidden_size} differs from the decoder's "
                          f"{decoder.hidden_size}; make them equal.")
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for key, value in ids.items():
        if key != "vocab_size":
            setattr(config, key, value)
    model = transformers.VisionEncoderDecoderModel(config=config)
    # The labels are already the next tokens (the model feeds them shifted right behind the start token): score
    # position by position. transformers' default for this class (ForCausalLM) shifts them once more and would
    # train the decoder to predict the token after the next one.
    model.loss_type = "ForMaskedLM"
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, ids[key])
    side = int(getattr(encoder, "image_size", 224))
    processor = transformers.ViTImageProcessor(size={"height": side, "width": side}, **NORMALISE)
    return model, processor


def _rows(data: Captions, tok, redraw: bool = False) -> list[dict[str, Any]]:
    """Each image decoded once (uint8 HWC) with its caption's token ids followed by [EOS]; with REDRAW the
    caption's scene instead (data/shapes.py), drawn anew by the collator each time the row is used. The scene sits
    under "pixel_values" because the Trainer hands the collator only the model's argument names."""
    from PIL import Image

    rows = []
    for i, (path, ids) in enumerate(zip(data.images, tok(data.captions)["input_ids"])):
        if redraw:
            try:
                rows.append({"pixel_values": shapes.scene_from_caption(data.captions[i]), "labels": list(ids)})
            except ToolchainError:
                raise RecipeError(f"{data.path} line {i + 2}: augment [\"{REDRAW}\"] draws pictures of shapes captions "
                                  f"and {data.captions[i][:60]!r} is not one; remove {REDRAW!r} from augment.") from None
            continue
        with Image.open(path) as im:
            rows.append({"pixel_values": np.asarray(im.convert("RGB"), dtype=np.uint8), "labels": list(ids)})
    return rows


def _collator(processor, seed: int = 0):
    """Batches: the image processor's pixel values, and labels padded with -100 (the model shifts them right
    behind the decoder start token itself). A row holding a scene is redrawn (new layout, tilt, colours, background
    and noise) by a generator seeded with SEED and rendered: the model never sees the same picture twice."""
    import torch

    rng = np.random.default_rng(seed)

    def picture(x: Any) -> np.ndarray:  # render_fast: render() up to rounding, 5x faster (data/shapes.py)
        return shapes.render_fast(shapes.redraw(x, rng)) if isinstance(x, shapes.Scene) else x

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        pixels = processor(images=[picture(b["pixel_values"]) for b in batch], return_tensors="pt")["pixel_values"]
        width = max(len(b["labels"]) for b in batch)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, b in enumerate(batch):
            labels[i, : len(b["labels"])] = torch.tensor(b["labels"])
        return {"pixel_values": pixels, "labels": labels}

    return collate


def greedy_captions(model, processor, tok, images: list[Path], batch: int = 64) -> list[str]:
    """PyTorch greedy generate() captions of IMAGES (files), BATCH at a time."""
    import torch
    from PIL import Image

    out, device = [], next(model.parameters()).device
    model.eval()
    for start in range(0, len(images), batch):
        pics = []
        for path in images[start : start + batch]:
            with Image.open(path) as im:
                pics.append(im.convert("RGB"))
        pixels = processor(images=pics, return_tensors="pt")["pixel_values"].to(device)
        with torch.inference_mode():
            ids = model.generate(pixel_values=pixels, do_sample=False, num_beams=1, max_new_tokens=MAX_CAPTION_TOKENS)
        out += tok.batch_decode(ids, skip_special_tokens=True)
    return [c.strip() for c in out]


def score_captions(preds: list[str], data: Captions, name: str) -> dict[str, Any]:
    """Exact match and BLEU-4 on the split, and on its seen and held-out rows separately where it marks them."""
    refs = [c.lower() for c in data.captions]
    out: dict[str, Any] = {f"{name}_exact_match": exact_match(preds, refs), f"{name}_bleu4": bleu4(preds, refs),
                           f"{name}_examples": len(refs)}
    if data.heldout is not None:
        held = np.asarray(data.heldout, dtype=bool)
        for part, mask in (("seen", ~held), ("heldout", held)):
            if mask.any():
                p, r = [preds[i] for i in np.flatnonzero(mask)], [refs[i] for i in np.flatnonzero(mask)]
                out.update({f"{name}_{part}_exact_match": exact_match(p, r), f"{name}_{part}_bleu4": bleu4(p, r),
                            f"{name}_{part}_examples": int(mask.sum())})
    return out


class _Saved:
    """The tokenizer and the image processor saved into one model dir (fit.save_model saves one object)."""

    def __init__(self, tok, processor):
        self.tok, self.processor = tok, processor

    def save_pretrained(self, path: str) -> None:
        tok, processor = self.tok, self.processor  # neither writes weights (tests/test_security.py)
        tok.save_pretrained(path)
        processor.save_pretrained(path)


def train_captioner(recipe: Recipe, base: Path | None, out: Path, smoke: bool, progress) -> dict[str, Any]:
    """A vision encoder-decoder trained from scratch on the recipe's captioned image table; greedy-caption exact
    match and BLEU-4 on dev and test where the recipe has them."""
    if base is not None:
        raise RecipeError(f"{recipe.path}: an image-to-text recipe trains from scratch; it takes no base model.")
    settings = smoke_settings(recipe.train, smoke)
    redraw = REDRAW in settings.augment  # the only augment load_recipe lets an image-to-text recipe have
    splits = {name: read_captions(recipe, smoke_limit(split, smoke, SMOKE["examples" if name == "train" else "dev"]))
              for name, split in (("train", recipe.data.train), ("dev", recipe.data.dev), ("test", recipe.data.test))
              if split is not None}
    import transformers

    transformers.set_seed(settings.seed)  # the new weights too: the same recipe trains the same model
    tok = caption_tokenizer(splits["train"].captions, settings.max_length)
    model, processor = build_captioner(recipe, tok)
    params = sum(p.numel() for p in model.parameters())
    progress(f"training a {ARCHITECTURE} from scratch ({params / 1e6:.2f}M parameters, vocab {len(tok)}) on "
             f"{len(splits['train'].images)} captioned images" + (", each drawn anew every epoch" if redraw else ""))
    trainer, seconds = fit(model, tok, _rows(splits["train"], tok, redraw), _collator(processor, settings.seed), settings,
                           out, progress, group_by_length=False)
    metrics: dict[str, Any] = {"train_examples": len(splits["train"].images), "train_seconds": round(seconds, 1),
                               "parameters": params, "vocab": len(tok), "settings": asdict(settings),
                               "base": f"a {ARCHITECTURE} from scratch"}
    metrics.update(trainer.state.log_history[-1] if trainer.state.log_history else {})
    for name in ("dev", "test"):
        if name in splits:
            scores = score_captions(greedy_captions(model, processor, tok, splits[name].images), splits[name], name)
            metrics.update(scores)
            parts = [f"{p} {scores[f'{name}_{p}_exact_match']:.3f}/{scores[f'{name}_{p}_bleu4']:.3f}"
                     for p in ("seen", "heldout") if f"{name}_{p}_exact_match" in scores]
            progress(f"{name} exact match {scores[f'{name}_exact_match']:.4f}, BLEU-4 {scores[f'{name}_bleu4']:.4f}"
                     + (f" (exact/BLEU {', '.join(parts)})" if parts else ""))
    save_model(model, _Saved(tok, processor), out, metrics, settings)
    return metrics
