"""What a sweep trains: the --sizes and --tokens specs, and one derived Recipe per (size, token budget).

A size is the recipe with its width and depth overridden, nothing else: the same data, tokenizer
vocabulary, schedule and export settings, so the only thing that varies along the curve is N. Three
spellings of --sizes, each refused in one sentence when malformed:

    ladder                              a named preset (PRESETS): (hidden, layers) pairs
    64x1,128x2,256x4                    explicit hidden x layers pairs
    hidden=64,128,256;layers=2,4        every combination of the axes (a grid)

``hidden`` and ``layers`` are the architecture's width and depth (ARCH_KEYS maps them to its config keys);
the attention heads keep the recipe's head size and key/value grouping, the MLP keeps the recipe's
width ratio. Any other axis is a literal key of the recipe's [source].config or [model].config (a user's
own module: ``d_model=64,128;layers=1,2``), set as given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from toolchain.runtime.errors import ToolchainError
from toolchain.train.recipe import Recipe, Training


class SweepSpecError(ToolchainError):
    """A --sizes or --tokens spec that cannot be read, or that the recipe cannot take."""


@dataclass(frozen=True)
class ArchKeys:
    """Where an architecture's config keeps width, depth, heads, key/value heads and MLP width."""

    hidden: str
    layers: str
    heads: str
    kv_heads: str | None = None
    ffn: str | None = None


ARCH_KEYS: dict[str, ArchKeys] = {
    "llama": ArchKeys("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "intermediate_size"),
    "bert": ArchKeys("hidden_size", "num_hidden_layers", "num_attention_heads", None, "intermediate_size"),
    "roberta": ArchKeys("hidden_size", "num_hidden_layers", "num_attention_heads", None, "intermediate_size"),
    "distilbert": ArchKeys("dim", "n_layers", "n_heads", None, "hidden_dim"),
    "gpt2": ArchKeys("n_embd", "n_layer", "n_head", None, "n_inner"),
}

# (hidden, layers) ladders; with the Shakespeare Llama's head size 32 and MLP ratio 2.75, "ladder" spans
# about 46k to 3M non-embedding parameters, roughly doubling per step.
PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    "smoke": ((32, 1), (64, 1)),
    "ladder": ((64, 1), (64, 2), (96, 2), (128, 2), (128, 4), (192, 4), (256, 4)),
}
EXAMPLE = "'ladder', '64x1,128x2' or 'hidden=64,128;layers=1,2'"
SHORT = {"hidden": "h", "layers": "l"}


@dataclass(frozen=True)
class Size:
    name: str  # e.g. h64-l2: a folder name under OUT/sizes/
    axes: tuple[tuple[str, int], ...]  # (axis, value) as given: hidden/layers or literal config keys


@dataclass(frozen=True)
class Point:
    """One model of the sweep: a size at a token budget, and the recipe that trains it."""

    name: str
    size: Size
    tokens: int | None  # None: the recipe's own schedule
    recipe: Recipe

    @property
    def key(self) -> str:
        """A digest of everything that decides this model: changed settings mean a stale result."""
        table = dataclasses.asdict(self.recipe)
        table["path"] = str(self.recipe.path)
        return hashlib.sha256(json.dumps(table, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _int(text: str, what: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) <= 0:
        raise SweepSpecError(f"{what} {text.strip()!r} is not a positive integer; write sizes as {EXAMPLE}.")
    return int(text)


def parse_sizes(spec: str) -> list[Size]:
    """--sizes as a list of sizes (at least two, no repeats), or one sentence saying what is wrong."""
    spec = (spec or "").strip()
    if not spec:
        raise SweepSpecError(f"--sizes is empty; give {EXAMPLE}.")
    if spec in PRESETS:
        combos = [(("hidden", h), ("layers", n)) for h, n in PRESETS[spec]]
    elif "=" in spec:
        combos = list(itertools.product(*_axes(spec)))
    elif re.fullmatch(r"[\dx,\s]+", spec):
        combos = [(("hidden", _int(h, "hidden")), ("layers", _int(n, "layers")))
                  for h, n in (_pair(p) for p in spec.split(",") if p.strip())]
    else:
        raise SweepSpecError(f"--sizes {spec!r} is not a preset ({', '.join(PRESETS)}), a list of HIDDENxLAYERS "
                             f"pairs or a grid of axes; give {EXAMPLE}.")
    sizes = [Size("-".join(f"{SHORT.get(k, k)}{v}" for k, v in combo), tuple(combo)) for combo in combos]
    names = [s.name for s in sizes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepSpecError(f"--sizes names {repeated[0]} twice; list each size once.")
    if len(sizes) < 2:
        raise SweepSpecError(f"--sizes {spec!r} gives one size; a sweep compares at least two, such as {EXAMPLE}.")
    return sizes


def _pair(text: str) -> tuple[str, str]:
    parts = text.strip().split("x")
    if len(parts) != 2:
        raise SweepSpecError(f"size {text.strip()!r} is not HIDDENxLAYERS; write sizes as {EXAMPLE}.")
    return parts[0], parts[1]


def _axes(spec: str) -> list[list[tuple[str, int]]]:
    axes, seen = [], set()
    for part in (p.strip() for p in spec.split(";") if p.strip()):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise SweepSpecError(f"--sizes axis {part!r} is not KEY=V1,V2,...; write sizes as {EXAMPLE}.")
        if key in seen:
            raise SweepSpecError(f"--sizes gives axis {key!r} twice; give each axis once with all its values.")
        seen.add(key)
        given = [v for v in values.split(",") if v.strip()]
        if not given:
            raise SweepSpecError(f"--sizes axis {key!r} has no values; give them as {key}=V1,V2.")
        axes.append([(key, _int(v, key)) for v in given])
    return axes


def parse_tokens(spec: str | None) -> list[int | None]:
    """--tokens as budgets, e.g. '400k' or '100k,200k,400k' (k = 1e3, M = 1e6); [None] when not given."""
    if spec is None or not str(spec).strip():
        return [None]
    budgets = []
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", part)
        value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()] if m else 0
        if value < 1:
            raise SweepSpecError(f"--tokens {part!r} is not a positive token count; give e.g. 400k or 100k,200k,400k.")
        budgets.append(int(value))
    if len(set(budgets)) != len(budgets):
        raise SweepSpecError(f"--tokens {spec!r} repeats a budget; list each budget once.")
    return sorted(budgets)


def with_schedule(recipe: Recipe, settings: list[str] | None) -> Recipe:
    """RECIPE with [train] settings overridden for every size, e.g. ``train.batch_size=8``: the one schedule the
    whole family shares (a token budget of a few hundred thousand wants more, smaller steps than a full run)."""
    train = recipe.train
    for item in settings or []:
        key, eq, text = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not eq or section != "train" or train is None or name not in {f.name for f in dataclasses.fields(train)}:
            allowed = ", ".join(f"train.{f.name}" for f in dataclasses.fields(Training))
            raise SweepSpecError(f"--set {item!r} is not KEY=VALUE for a [train] setting the recipe has; use one of "
                                 f"{allowed}.")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise SweepSpecError(f"--set {item!r} has a value that is not a TOML number, string or list; write e.g. "
                                 "train.batch_size=8.") from None
        train = dataclasses.replace(train, **{name: value})
    if train is not recipe.train:
        train.check(f"{recipe.path} with --set")
    return dataclasses.replace(recipe, train=train)


def tokens_label(tokens: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1000)):
        if tokens % scale == 0:
            return f"{tokens // scale}{unit}"
    return str(tokens)


def plan(recipe: Recipe, sizes: list[Size], budgets: list[int | None]) -> list[Point]:
    """Every (size, budget) as a Point, smallest budget first, then in the order the sizes were given."""
    if recipe.train is None:
        raise SweepSpecError(f"{recipe.path} has no [train] section; a sweep trains each size, so give the recipe "
                             "a [train] section.")
    points = []
    for tokens in budgets:
        for size in sizes:
            name = size.name if tokens is None else f"{size.name}-t{tokens_label(tokens)}"
            points.append(Point(name, size, tokens, derive(recipe, size, tokens, name)))
    return points


def derive(recipe: Recipe, size: Size, tokens: int | None, name: str) -> Recipe:
    """RECIPE at SIZE and token budget: only width/depth and the step count differ; nothing is written."""
    train = recipe.train
    if tokens is not None:  # a block of max_length tokens per example: exact for language models
        train = dataclasses.replace(train, max_steps=max(1, math.ceil(tokens / (train.batch_size * train.max_length))))
    name = f"{recipe.name}-{name}"
    if recipe.model is not None:
        config = _literal(recipe.model.config, size, "[model].config")
        return dataclasses.replace(recipe, name=name, train=train, model=dataclasses.replace(recipe.model, config=config))
    if recipe.source.architecture is None:
        raise SweepSpecError(f"{recipe.path} finetunes the pretrained {recipe.source.pretrained}, whose size is fixed; "
                             "sweep a recipe that trains an [source] architecture or a [model] module from scratch.")
    config = _scaled(recipe, size)
    return dataclasses.replace(recipe, name=name, train=train, source=dataclasses.replace(recipe.source, config=config))


def _literal(config: dict[str, Any], size: Size, where: str) -> dict[str, Any]:
    out = dict(config)
    for key, value in size.axes:
        if key not in config:
            raise SweepSpecError(f"size axis {key!r} is not a key of the recipe's {where} ({', '.join(config)}); "
                                 "use one of those.")
        out[key] = value
    return out


def _scaled(recipe: Recipe, size: Size) -> dict[str, Any]:
    """The [source].config at SIZE: hidden and layers through ARCH_KEYS, heads and MLP following the width."""
    arch = recipe.source.architecture
    base = {**_defaults(arch), **recipe.source.config}
    keys = ARCH_KEYS.get(arch)
    out = dict(recipe.source.config)
    for axis, value in size.axes:
        if axis in SHORT:
            if keys is None:
                raise SweepSpecError(f"size axis {axis!r} is not mapped for architecture {arch!r}; name its config "
                                     f"keys instead (one of {', '.join(sorted(base))}).")
            out[getattr(keys, axis)] = value
            if axis == "hidden":
                out.update(_follow_width(base, keys, value))
        elif axis in base:
            out[axis] = value
        else:
            raise SweepSpecError(f"size axis {axis!r} is neither hidden, layers nor a {arch} config key; use one of "
                                 "those.")
    return out


def _follow_width(base: dict[str, Any], keys: ArchKeys, hidden: int) -> dict[str, Any]:
    """Heads of the recipe's head size (grouped as the recipe groups them) and an MLP of its width ratio."""
    head = base[keys.hidden] // base[keys.heads]
    if hidden % head and hidden > head:
        raise SweepSpecError(f"hidden={hidden} does not split into attention heads of {head} (the recipe's head "
                             f"size); use a multiple of {head}.")
    heads = max(1, hidden // head)
    out: dict[str, Any] = {keys.heads: heads}
    if keys.kv_heads is not None:
        group = base[keys.heads] // (base.get(keys.kv_heads) or base[keys.heads])
        kv = max(1, heads // max(1, group))
        out[keys.kv_heads] = kv if heads % kv == 0 else 1
    if keys.ffn is not None and base.get(keys.ffn):
        out[keys.ffn] = max(8, round(hidden * base[keys.ffn] / base[keys.hidden] / 8) * 8)
    return out


def _defaults(arch: str) -> dict[str, Any]:
    """The architecture's own config defaults (transformers'), for keys the recipe leaves unset."""
    import transformers

    return transformers.AutoConfig.for_model(arch).to_dict()
