"""A generated, seeded image data set: coloured shapes on noisy backgrounds, with captions and labels.

Each example is one 64x64 RGB image of one or two shapes (circle, square, triangle, star) in one of six
colours and three sizes, one placed above, below, left of or right of the other, on a grey gradient with
noise::

    a large blue square below a small red circle        label: square (the largest shape), count: 2

The caption is a function of the image alone: two shapes never share a size, so the larger is always named
first and the relation says where the larger is relative to the smaller (``canonical``; the smaller is drawn
last, on top where the two touch). Were the order random, the same picture would be "a small red circle above
a large blue square" as often as the line above, and a captioner could only guess which (a cap near 0.65
exact match on two-shape scenes).

Splits: ``train`` never shows the held-out colour-shape pairs (HELD_OUT, such as a red star); half of
``dev`` and ``test`` contain one (``heldout`` = 1), so generalisation and memory are told apart.

The checked-in TSVs (``models/data/shapes/{train,dev,test}.tsv``) hold each image's file name, caption,
labels and the scene as JSON; the PNGs are rendered from the scene on demand into ``images/`` beside them
(git-ignored; ``materialize()``), so thousands of images never enter the repository. Rendering depends only
on the scene (its noise has its own seed): the same seed gives byte-identical TSVs and PNGs.

For training, ``redraw`` lays a caption's shapes out afresh and ``render_fast`` draws it (``render`` up to
rounding, ~5x faster): a captioner then never sees one picture twice (train/caption_stage.py).

Regenerate with ``python -m toolchain.data.shapes --out models/data/shapes`` (add ``--render`` to draw
every image now). Needs numpy and Pillow (the runtime's ``vision`` extra); torch-free.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from toolchain.artifact.atomic import write_bytes
from toolchain.runtime.errors import ToolchainError

SPLITS = ("train", "dev", "test")
SIZES = {"train": 12000, "dev": 1000, "test": 1000}
SEED = 0
CANVAS = 64  # pixels per side
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: smooth edges, still deterministic
SHAPES = ("circle", "square", "triangle", "star")  # label ids are positions in this tuple
COLOURS = {"red": (215, 35, 35), "green": (35, 165, 55), "blue": (40, 80, 220),
           "yellow": (235, 205, 30), "purple": (140, 55, 185), "orange": (245, 135, 25)}
SIZE_WORDS = {"small": 6.5, "medium": 10.5, "large": 15.0}  # half-extent in pixels
RELATIONS = ("above", "below", "left of", "right of")
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
HELD_OUT = (("red", "star"), ("green", "circle"), ("blue", "triangle"), ("yellow", "square"))
TWO_SHAPES = 0.7  # share of scenes with two shapes
HELD_OUT_SHARE = 0.5  # of dev and test
COLUMNS = ("image", "caption", "label", "shape", "count", "heldout", "scene")
IMAGES = "images"  # the folder beside the TSVs that holds the rendered PNGs


@dataclass(frozen=True)
class Item:
    """One shape: its words, its exact colour, and where it is drawn (centre and half-extent in pixels)."""

    shape: str
    colour: str
    size: str
    rgb: tuple[int, int, int]
    x: float
    y: float
    angle: float  # degrees

    @property
    def radius(self) -> float:
        return SIZE_WORDS[self.size]

    def words(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Everything an image is rendered from: a background gradient, noise (with its own seed), the shapes."""

    items: tuple[Item, ...]
    relation: str | None  # where items[0] (the larger) is relative to items[1]; None for one shape
    top: tuple[int, int, int]  # background gradient's colours and direction
    bottom: tuple[int, int, int]
    direction: float  # degrees
    noise: float  # standard deviation of the Gaussian pixel noise
    seed: int

    @property
    def caption(self) -> str:
        first = self.items[0].words()
        return first if self.relation is None else f"{first} {self.relation} {self.items[1].words()}"

    @property
    def largest(self) -> Item:
        return max(self.items, key=lambda item: item.radius)

    @property
    def heldout(self) -> bool:
        return any((item.colour, item.shape) in HELD_OUT for item in self.items)

    def to_json(self) -> str:
        items = [[i.shape, i.colour, i.size, list(i.rgb), round(i.x, 2), round(i.y, 2), round(i.angle, 1)]
                 for i in self.items]
        return json.dumps({"items": items, "relation": self.relation, "bg": [list(self.top), list(self.bottom),
                           round(self.direction, 1)], "noise": round(self.noise, 2), "seed": self.seed},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        try:
            d = json.loads(text)
            items = tuple(Item(s, c, z, tuple(rgb), float(x), float(y), float(a))
                          for s, c, z, rgb, x, y, a in d["items"])
            top, bottom, direction = d["bg"]
            return cls(items, d["relation"], tuple(top), tuple(bottom), float(direction), float(d["noise"]),
                       int(d["seed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolchainError(f"scene {text[:60]!r} is not a shapes scene ({exc}); regenerate the TSV with "
                                 "python -m toolchain.data.shapes.") from None


# ---- drawing scenes ------------------------------------------------------------------------------
def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _grey(rng: np.random.Generator) -> tuple[int, int, int]:
    level = int(rng.integers(25, 231))
    return _jitter(rng, (level, level, level), 18)


def _place(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    lo, hi = radius + 1, CANVAS - radius - 1
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _spots(rng: np.random.Generator, relation: str, r0: float, r1: float) -> list[tuple[float, float]]:
    """Centres of two shapes of half-extents R0 and R1, the first RELATION the second: apart along the
    relation's axis by at least a 2-pixel gap, and offset across it by at most the larger half-extent."""
    first_low = relation in ("above", "left of")  # the first shape has the smaller coordinate along the axis
    lo_r, hi_r = (r0, r1) if first_low else (r1, r0)
    lo = float(rng.uniform(lo_r + 1, CANVAS - 1 - hi_r - (lo_r + hi_r + 2)))
    hi = float(rng.uniform(lo + lo_r + hi_r + 2, CANVAS - hi_r - 1))
    a0 = float(rng.uniform(r0 + 1, CANVAS - r0 - 1))
    reach = max(r0, r1)
    a1 = float(rng.uniform(max(r1 + 1, a0 - reach), min(CANVAS - r1 - 1, a0 + reach)))
    along = (lo, hi) if first_low else (hi, lo)
    if relation in ("above", "below"):
        return [(a0, along[0]), (a1, along[1])]
    return [(along[0], a0), (along[1], a1)]


def draw_item(rng: np.random.Generator, shape: str, colour: str, size: str, at=None) -> Item:
    x, y = at if at is not None else _place(rng, SIZE_WORDS[size])
    angle = 0.0 if shape == "circle" else float(rng.uniform(-15, 15))
    return Item(shape, colour, size, _jitter(rng, COLOURS[colour], 15), x, y, angle)


def canonical(items: tuple[Item, ...], relation: str | None) -> tuple[tuple[Item, ...], str | None]:
    """ITEMS and RELATION (where items[0] is relative to items[1]) with the larger shape first: the order a
    caption names them in, so the words follow from the picture (two shapes never share a size)."""
    if relation is None or items[0].radius >= items[1].radius:  # equal sizes: only typed captions
        return items, relation
    return (items[1], items[0]), INVERSE[relation]


def _pairs(heldout: bool) -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES if ((c, s) in HELD_OUT) == heldout]


def draw_scene(rng: np.random.Generator, heldout: bool) -> Scene:
    """One random scene; with HELDOUT one of its shapes is a held-out colour-shape pair, else none is."""
    seen, unseen = _pairs(False), _pairs(True)
    two = rng.random() < TWO_SHAPES
    pairs = [seen[rng.integers(len(seen))] for _ in range(2 if two else 1)]
    if heldout:
        pairs[int(rng.integers(len(pairs)))] = unseen[rng.integers(len(unseen))]
    sizes = [str(s) for s in rng.choice(list(SIZE_WORDS), size=len(pairs), replace=False)]
    relation = str(RELATIONS[rng.integers(len(RELATIONS))]) if two else None
    return _layout(rng, [(z, c, s) for (c, s), z in zip(pairs, sizes)], relation)


def _layout(rng: np.random.Generator, shapes: list[tuple[str, str, str]], relation: str | None) -> Scene:
    """A scene of SHAPES ((size, colour, shape) each; the first RELATION the second) with a random layout, tilt,
    colour jitter, background and noise; named larger first (``canonical``)."""
    radii = [SIZE_WORDS[z] for z, _, _ in shapes]
    spots = _spots(rng, relation, *radii) if relation is not None else [_place(rng, radii[0])]
    items = tuple(draw_item(rng, s, c, z, at) for (z, c, s), at in zip(shapes, spots))
    items, relation = canonical(items, relation)
    return Scene(items, relation, _grey(rng), _grey(rng), float(rng.uniform(0, 360)), float(rng.uniform(3, 12)),
                 int(rng.integers(2**31)))


def redraw(scene: Scene, rng: np.random.Generator) -> Scene:
    """A new picture of the same caption: SCENE's shapes, sizes, colours and relation, laid out, tilted, jittered,
    lit and noised afresh from RNG as ``draw_scene`` would (either shape may be the one placed first), so a
    captioner trained on redrawn scenes never sees one picture twice (train/caption_stage.py ``redraw``)."""
    shapes = [(i.size, i.colour, i.shape) for i in scene.items]
    relation = scene.relation
    if relation is not None and rng.random() < 0.5:
        shapes, relation = shapes[::-1], INVERSE[relation]
    return _layout(rng, shapes, relation)


def _polygon(item: Item, scale: float) -> list[tuple[float, float]]:
    r, turn = item.radius * scale, math.radians(item.angle)
    if item.shape == "square":
        corners = [(r * 0.9 * math.sqrt(2), math.radians(45 + 90 * k)) for k in range(4)]
    elif item.shape == "triangle":
        corners = [(r * 1.1, math.radians(-90 + 120 * k)) for k in range(3)]
    else:  # star: five points, inner radius 0.45 of the outer
        corners = [(r * (1.15 if k % 2 == 0 else 0.52), math.radians(-90 + 36 * k)) for k in range(10)]
    cx, cy = item.x * scale, item.y * scale
    return [(cx + d * math.cos(a + turn), cy + d * math.sin(a + turn)) for d, a in corners]


def render(scene: Scene) -> "Any":
    """The scene as a CANVAS x CANVAS RGB PIL image."""
    from PIL import Image, ImageDraw

    big = CANVAS * SUPERSAMPLE
    t = np.linspace(-0.5, 0.5, big)
    d = math.radians(scene.direction)
    ramp = np.clip(np.cos(d) * t[None, :] + np.sin(d) * t[:, None] + 0.5, 0, 1)
    rest, bg = 1 - ramp, np.empty((big, big, 3), np.uint8)
    for c in range(3):  # a channel at a time: the same float64 sums as broadcasting over HWC, 4-5x faster
        bg[..., c] = (rest * float(scene.top[c]) + ramp * float(scene.bottom[c])).round()
    image = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(image)
    for item in scene.items:
        if item.shape == "circle":
            x, y, r = (v * SUPERSAMPLE for v in (item.x, item.y, item.radius))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=item.rgb)
        else:
            draw.polygon(_polygon(item, SUPERSAMPLE), fill=item.rgb)
    small = np.asarray(image.resize((CANVAS, CANVAS), Image.Resampling.BOX), dtype=np.float64)
    noise = np.random.default_rng(scene.seed).normal(0.0, scene.noise, small.shape)
    return Image.fromarray(np.clip(small + noise, 0, 255).round().astype(np.uint8), "RGB")


_CENTRES = np.linspace(-0.5, 0.5, CANVAS * SUPERSAMPLE).reshape(CANVAS, SUPERSAMPLE).mean(axis=1)


def render_fast(scene: Scene) -> np.ndarray:
    """The scene as ``render`` draws it up to rounding (a channel one off in about 1 value in 8, rarely more where
    two shapes touch), as an HWC uint8 array in about a fifth of the time: for pictures drawn afresh for training
    (train/caption_stage.py), never for the data set's files. The background is computed at CANVAS size (the mean
    of a linear ramp over a pixel's samples is its value at the pixel's centre) instead of at SUPERSAMPLE times it,
    and each shape is blended in by its coverage, itself drawn at SUPERSAMPLE times the size and box-filtered."""
    from PIL import Image, ImageDraw

    big = CANVAS * SUPERSAMPLE
    d = math.radians(scene.direction)
    ramp = np.clip(np.add.outer(np.sin(d) * _CENTRES, np.cos(d) * _CENTRES) + 0.5, 0, 1)[..., None]
    out = (1 - ramp) * np.asarray(scene.top, np.float64) + ramp * np.asarray(scene.bottom, np.float64)
    for item in scene.items:
        mask = Image.new("L", (big, big), 0)
        if item.shape == "circle":
            x, y, r = (v * SUPERSAMPLE for v in (item.x, item.y, item.radius))
            ImageDraw.Draw(mask).ellipse((x - r, y - r, x + r, y + r), fill=255)
        else:
            ImageDraw.Draw(mask).polygon(_polygon(item, SUPERSAMPLE), fill=255)
        cover = np.asarray(mask.resize((CANVAS, CANVAS), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255
        out += cover * (np.asarray(item.rgb, np.float64) - out)
    noise = np.random.default_rng(scene.seed).normal(0.0, scene.noise, out.shape)
    return np.clip(out.round() + noise, 0, 255).round().astype(np.uint8)


def png_bytes(scene: Scene) -> bytes:
    """The rendered scene as PNG bytes (the same bytes for the same scene)."""
    buf = io.BytesIO()
    render(scene).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


_ITEM = rf"a ({'|'.join(SIZE_WORDS)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
CAPTION = re.compile(rf"^\s*{_ITEM}(?: ({'|'.join(RELATIONS)}) {_ITEM})?\s*\.?\s*$", re.IGNORECASE)


def scene_from_caption(caption: str) -> Scene:
    """The scene a caption describes ("a large blue square below a small red circle"), laid out with a seed
    taken from the caption, so the same words always give the same picture. Either order is read (the smaller
    shape named first too); the scene's own caption is the canonical one, larger first."""
    m = CAPTION.match(caption or "")
    if m is None:
        raise ToolchainError(f"{caption[:60]!r} is not a shapes caption; write one like 'a large blue square below a "
                             f"small red circle' (sizes {', '.join(SIZE_WORDS)}; colours {', '.join(COLOURS)}; "
                             f"shapes {', '.join(SHAPES)}).")
    words = [w.lower() if w else w for w in m.groups()]
    rng = np.random.default_rng(zlib.crc32(" ".join(w or "" for w in words).encode()))
    (z0, c0, s0, relation, z1, c1, s1) = words
    return _layout(rng, [(z0, c0, s0)] if relation is None else [(z0, c0, s0), (z1, c1, s1)], relation)


# ---- the data set --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    image: str  # the PNG's path relative to the TSV's folder
    scene: Scene

    @property
    def label(self) -> int:
        return SHAPES.index(self.scene.largest.shape)

    def row(self) -> list[str]:
        s = self.scene
        return [self.image, s.caption, str(self.label), s.largest.shape, str(len(s.items)), str(int(s.heldout)),
                s.to_json()]


def generate(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[Example]]:
    """The three splits; train has no held-out pair, dev and test have one in HELD_OUT_SHARE of their scenes."""
    sizes = dict(SIZES if sizes is None else sizes)
    if sorted(sizes) != sorted(SPLITS) or any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise ToolchainError(f"sizes must give a positive count for each of {list(SPLITS)}, got {sizes!r}.")
    out = {}
    for k, name in enumerate(SPLITS):
        rng = np.random.default_rng([seed, k])
        n_held = 0 if name == "train" else round(sizes[name] * HELD_OUT_SHARE)
        flags = [i < n_held for i in range(sizes[name])]
        rng.shuffle(flags)
        out[name] = [Example(f"{IMAGES}/{name}/{i:05d}.png", draw_scene(rng, held)) for i, held in enumerate(flags)]
    return out


def to_tsv(examples: Iterable[Example]) -> str:
    lines = ["\t".join(COLUMNS)] + ["\t".join(e.row()) for e in examples]
    return "\n".join(lines) + "\n"


def write(out_dir: str | Path, seed: int = SEED, sizes: dict[str, int] | None = None,
          render_images: bool = False) -> dict[str, Path]:
    """Write train.tsv, dev.tsv and test.tsv under OUT_DIR (and every PNG when RENDER_IMAGES)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, examples in generate(seed, sizes).items():
        path = out_dir / f"{name}.tsv"
        write_bytes(path, to_tsv(examples).encode("utf-8"))
        paths[name] = path
        if render_images:
            materialize(path)
    return paths


def read_rows(tsv: str | Path) -> list[dict[str, str]]:
    """The rows of a shapes TSV as dicts (column -> value)."""
    with open(tsv, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def materialize(tsv: str | Path, rows: list[dict[str, str]] | None = None) -> int:
    """Render the PNG of every row (of TSV, or the given ROWS of it) whose file is missing; return how many.

    Paths are relative to the TSV's folder and must stay inside it; each file is written atomically, so
    processes rendering the same split at once do not see half-written files."""
    tsv = Path(tsv)
    root = tsv.parent.resolve()
    made = 0
    for row in rows if rows is not None else read_rows(tsv):
        target = (root / row["image"]).resolve()
        if root not in target.parents:
            raise ToolchainError(f"{tsv}: image path {row['image']!r} points outside {root}; fix the TSV.")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(target, png_bytes(Scene.from_json(row["scene"])), durable=False)
            made += 1
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain.data.shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for train.tsv, dev.tsv, test.tsv (and images/)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument("--render", action="store_true", help="draw every PNG now (else on first use)")
    args = parser.parse_args(argv)
    for name, path in write(args.out, args.seed, render_images=args.render).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
