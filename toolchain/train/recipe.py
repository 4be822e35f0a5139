"""Recipes: one small TOML file per model in models/, parsed into dataclasses that check themselves.

Unknown keys are errors naming the key and the allowed ones; relative paths resolve against the
recipe's folder and may not escape it (absolute paths are allowed, on purpose).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from toolchain.runtime.errors import ToolchainError
from toolchain.runtime.tasks import TASKS

KNOWN_ARCHITECTURES = ("bert", "distilbert", "roberta", "llama", "gpt2", "vit", "vision-encoder-decoder")
# [train] augment for image tasks (train/image_stage.py AUGMENTATIONS): label-preserving changes to training images
IMAGE_AUGMENTATIONS = ("flip", "rotate90", "grayscale")
# [train] augment for image-to-text (train/caption_stage.py): each training caption drawn as a new picture when used
CAPTION_AUGMENTATIONS = ("redraw",)
# [pretrain] objective -> the architectures it trains (the objectives themselves: toolchain/train/objectives.py)
PRETRAIN_OBJECTIVES = {"masked-lm": ("bert", "distilbert", "roberta"), "causal-lm": ("gpt2", "llama")}


class RecipeError(ToolchainError):
    """The recipe file is malformed or refers to something that does not exist."""


@dataclass
class Split:
    """One data file: which column holds the text and which the label."""

    path: str
    text: str = "sentence"
    label: str | None = None  # None: unlabelled (pretraining text)
    limit: int | None = None
    target: str | None = None  # text2text-generation: the column holding each text's target text
    image: str | None = None  # image tasks: the column naming each example's image file (relative to the table)


@dataclass
class Source:
    """Where the model starts: a pretrained model, or an architecture config trained from scratch."""

    pretrained: str | None = None  # model dir, bundled name or hub id
    architecture: str | None = None  # from scratch: one of KNOWN_ARCHITECTURES
    config: dict[str, Any] = field(default_factory=dict)  # config overrides for `architecture`
    vocab_size: int = 8000  # from scratch: size of the tokenizer trained on the training text
    trust_remote_code: bool = False  # let a pretrained model run its own Python code (config.json auto_map)

    def check(self, where: str) -> None:
        if (self.pretrained is None) == (self.architecture is None):
            raise RecipeError(f"{where}: [source] needs exactly one of 'pretrained' or 'architecture'.")
        if not isinstance(self.trust_remote_code, bool):
            raise RecipeError(f"{where}: [source] trust_remote_code must be true or false, got {self.trust_remote_code!r}.")
        if self.architecture is not None and self.architecture not in KNOWN_ARCHITECTURES:
            raise RecipeError(f"{where}: architecture {self.architecture!r} is not known; use one of {', '.join(KNOWN_ARCHITECTURES)}.")


@dataclass
class Training:
    """Trainer settings: the usual knobs, nothing exotic."""

    epochs: float = 1.0
    max_steps: int = -1
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    logging_steps: int = 50
    save_steps: int = 500
    mlm_probability: float = 0.15  # pretraining only
    label_smoothing: float = 0.0  # text2text modules: cross-entropy label smoothing
    augment: list[str] = field(default_factory=list)  # image tasks: names of IMAGE_AUGMENTATIONS applied to training

    def check(self, where: str) -> None:
        positive = {"max_length": self.max_length, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                    "logging_steps": self.logging_steps, "save_steps": self.save_steps}
        for key, value in positive.items():
            if not value > 0:
                raise RecipeError(f"{where}: {key} must be positive, got {value}.")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise RecipeError(f"{where}: set epochs > 0 or max_steps > 0.")
        if not 0 <= self.label_smoothing < 1:
            raise RecipeError(f"{where}: label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        names = self.augment if isinstance(self.augment, list) else [self.augment]
        unknown = [a for a in names if a not in IMAGE_AUGMENTATIONS + CAPTION_AUGMENTATIONS]
        if unknown or not isinstance(self.augment, list):
            raise RecipeError(f"{where}: augment {(unknown or names)[0]!r} is not known; use a list of names from "
                              f"{', '.join(IMAGE_AUGMENTATIONS + CAPTION_AUGMENTATIONS)}.")


@dataclass
class Data:
    train: Split
    dev: Split | None = None
    test: Split | None = None  # text2text-generation: scored once at the end of training
    held_out: float = 0.05  # text-generation without a dev split: this share of the text's end is held out


@dataclass
class Pretrain:
    """Pretraining from scratch on unlabelled text before finetuning: masked LM (BERT) or causal LM (GPT-2)."""

    data: list[Split]
    train: Training = field(default_factory=Training)
    objective: str = "masked-lm"  # one of PRETRAIN_OBJECTIVES

    def check(self, where: str, architecture: str | None) -> None:
        if self.objective not in PRETRAIN_OBJECTIVES:
            raise RecipeError(f"{where}: [pretrain] objective {self.objective!r} is not known; "
                              f"use one of {', '.join(PRETRAIN_OBJECTIVES)}.")
        fits = PRETRAIN_OBJECTIVES[self.objective]
        if architecture not in fits:
            raise RecipeError(f"{where}: [pretrain] objective {self.objective!r} trains a {' or '.join(fits)} from "
                              f"scratch, not {architecture or 'a pretrained model'}; set [source] architecture to one "
                              f"of those or pick the other objective.")


@dataclass
class Model:
    """A user's own nn.Module instead of a [source]: ``build(config)`` returns (module, IOSpec)
    (toolchain.export.modules); the package is looked up beside the recipe first."""

    module: str  # "package.module:build"
    config: dict[str, Any] = field(default_factory=dict)  # passed to build()


@dataclass
class Export:
    quantize: list[str] = field(default_factory=list)  # modes of `toolchain quantize`
    opset: int | None = None
    optimize: bool = False


@dataclass
class Gate:
    max_drop: float | None = None  # quantization budget (the gate's default when unset)
    min_accuracy: float | None = None  # the trained fp32 model must reach this on the dev split


@dataclass
class Recipe:
    name: str
    task: str
    path: Path  # the recipe file
    source: Source = field(default_factory=Source)  # exactly one of [source] and [model]
    model: Model | None = None
    labels: list[str] | None = None
    data: Data | None = None
    train: Training | None = None
    pretrain: Pretrain | None = None
    export: Export = field(default_factory=Export)
    gate: Gate = field(default_factory=Gate)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A data path from the recipe: relative to the recipe's folder and not outside it, or absolute."""
        given = Path(relative).expanduser()
        if given.is_absolute():
            return given
        resolved = (self.folder / given).resolve()
        if self.folder.resolve() not in resolved.parents:
            raise RecipeError(f"{self.path}: path {relative!r} escapes the recipe's folder; give an absolute path "
                              "if you mean a file elsewhere.")
        return resolved


def _field_type(tp: Any) -> Any:
    """``X | None`` -> X when X is a dataclass; other annotations unchanged."""
    inner = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    if getattr(tp, "__origin__", None) is not list and len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
        return inner[0]
    return tp


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Build dataclass-typed values from TOML tables, rejecting unknown keys."""
    tp = _field_type(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where} must be a table, got {type(value).__name__}.")
        return _build(tp, value, where)
    if getattr(tp, "__origin__", None) is list and dataclasses.is_dataclass(tp.__args__[0]):
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list of tables.")
        return [_build(tp.__args__[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _build(cls: type, table: dict[str, Any], where: str, **given: Any) -> Any:
    """cls(**table) with nested tables converted; ``given`` are fields set by the loader, not the file."""
    hints = get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in given]
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(allowed)}.")
    missing = [f.name for f in dataclasses.fields(cls) if f.name in allowed and f.name not in table
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{where}: missing required key {missing[0]!r}.")
    kwargs = {key: _convert(hints[key], value, f"{where} [{key}]") for key, value in table.items()}
    return cls(**kwargs, **given)


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; recipes live in models/*.toml.")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path} is not valid TOML ({exc}).") from None
    table.setdefault("name", path.stem)
    recipe = _build(Recipe, table, str(path), path=path.resolve())
    where = str(path)
    if recipe.task not in TASKS:
        raise RecipeError(f"{where}: task {recipe.task!r} is not supported; use one of {', '.join(sorted(TASKS))}.")
    _check_model(recipe, table, where)
    if recipe.pretrain is not None:
        recipe.pretrain.check(where, recipe.source.architecture)
    for section in (recipe.train, recipe.pretrain.train if recipe.pretrain else None):
        if section is not None:
            section.check(where)
    if recipe.train is not None and recipe.data is None:
        raise RecipeError(f"{where}: [train] needs a [data] section with the training split.")
    if recipe.task == "text-generation" and recipe.train is not None and recipe.data.train.label is not None:
        raise RecipeError(f"{where}: a text-generation recipe trains on plain text; remove 'label' from [data.train].")
    if recipe.task == "image-to-text" and recipe.train is not None:
        wrong = [a for a in recipe.train.augment if a not in CAPTION_AUGMENTATIONS]
        if wrong:
            raise RecipeError(f"{where}: augment {wrong[0]!r} would change what a caption says (left becomes right); "
                              f"an image-to-text recipe takes augment = [\"{CAPTION_AUGMENTATIONS[0]}\"] or none.")
    if recipe.task == "image-classification" and recipe.train is not None:
        wrong = [a for a in recipe.train.augment if a not in IMAGE_AUGMENTATIONS]
        if wrong:
            raise RecipeError(f"{where}: augment {wrong[0]!r} is for image-to-text; an image classifier takes "
                              f"{', '.join(IMAGE_AUGMENTATIONS)}.")
        for split in (recipe.data.train, recipe.data.dev, recipe.data.test):
            if split is not None and split.image is None:
                raise RecipeError(f"{where}: the {split.path} split needs an 'image' column for image-classification "
                                  "(such as image = \"image\").")
    if recipe.task in ("text-classification", "image-classification") and recipe.train is not None:
        if not recipe.labels or len(set(recipe.labels)) != len(recipe.labels):
            raise RecipeError(f"{where}: a classifier needs 'labels', a list of distinct class names.")
        for split in (recipe.data.train, recipe.data.dev):
            if split is not None and split.label is None:
                raise RecipeError(f"{where}: the {split.path} split needs a 'label' column for a classifier.")
    if recipe.task == "text2text-generation" and recipe.train is not None:
        for split in (recipe.data.train, recipe.data.dev, recipe.data.test):
            if split is not None and split.target is None:
                raise RecipeError(f"{where}: the {split.path} split needs a 'target' column for text2text-generation "
                                  "(such as target = \"iso\").")
    if recipe.source.architecture and recipe.pretrain is None and recipe.train is None:
        raise RecipeError(f"{where}: a model from scratch needs [pretrain] or [train]; otherwise it is random.")
    return recipe


def _check_model(recipe: Recipe, table: dict[str, Any], where: str) -> None:
    """Exactly one of [source] (a Hugging Face model or architecture) and [model] (an nn.Module entry point)."""
    if ("source" in table) == ("model" in table):
        raise RecipeError(f"{where}: give exactly one of [source] (pretrained or architecture) and [model] "
                          "(module = \"package.module:build\").")
    if recipe.model is None:
        recipe.source.check(where)
        return
    if not isinstance(recipe.model.config, dict):
        raise RecipeError(f"{where}: [model] config must be a table ([model.config]).")
    if recipe.pretrain is not None or recipe.train is None:
        raise RecipeError(f"{where}: a [model] recipe trains its module from scratch; give it a [train] section "
                          "and no [pretrain].")
