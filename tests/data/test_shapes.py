"""The generated shapes set: seeded and byte-identical, captions that say what is drawn, held-out colour-shape
pairs kept out of training, images drawn on demand beside the checked-in TSVs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from toolchain.data import shapes
from toolchain.data.texts import read_texts
from toolchain.runtime.errors import ToolchainError

CHECKED_IN = Path(__file__).resolve().parents[2] / "models" / "data" / "shapes"
SMALL = {"train": 60, "dev": 40, "test": 40}


def test_same_seed_same_tsv_and_byte_identical_pngs(tmp_path):
    a, b = shapes.generate(5, SMALL), shapes.generate(5, SMALL)
    assert shapes.to_tsv(a["dev"]) == shapes.to_tsv(b["dev"])
    assert [shapes.png_bytes(e.scene) for e in a["dev"][:5]] == [shapes.png_bytes(e.scene) for e in b["dev"][:5]]
    assert shapes.to_tsv(shapes.generate(6, SMALL)["dev"]) != shapes.to_tsv(a["dev"])
    shapes.write(tmp_path / "x", 5, SMALL, render_images=True)
    shapes.write(tmp_path / "y", 5, SMALL, render_images=True)
    digest = lambda root: {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
                           for p in sorted(root.rglob("*.png"))}
    assert len(digest(tmp_path / "x")) == sum(SMALL.values()) and digest(tmp_path / "x") == digest(tmp_path / "y")


def test_the_checked_in_tsvs_are_what_the_generator_writes():
    for name, examples in shapes.generate().items():
        assert (CHECKED_IN / f"{name}.tsv").read_text(encoding="utf-8") == shapes.to_tsv(examples), name


def test_held_out_pairs_never_appear_in_training():
    splits = shapes.generate(0, {"train": 400, "dev": 200, "test": 200})
    pairs = lambda ex: {(i.colour, i.shape) for e in ex for i in e.scene.items}  # noqa: E731
    assert not pairs(splits["train"]) & set(shapes.HELD_OUT)
    for name in ("dev", "test"):
        held = [e.scene.heldout for e in splits[name]]
        assert sum(held) == 100 and set(shapes.HELD_OUT) <= pairs(splits[name])


def _centre(item) -> tuple[float, float]:
    return item.x, item.y


def test_captions_and_labels_say_what_is_drawn():
    for e in shapes.generate(1, SMALL)["train"]:
        s = e.scene
        assert s.caption.startswith(s.items[0].words()) and e.label == shapes.SHAPES.index(s.largest.shape)
        if s.relation is None:
            assert len(s.items) == 1
            continue
        (x0, y0), (x1, y1) = _centre(s.items[0]), _centre(s.items[1])
        gap = s.items[0].radius + s.items[1].radius
        along = {"above": y1 - y0, "below": y0 - y1, "left of": x1 - x0, "right of": x0 - x1}[s.relation]
        assert along >= gap and s.items[0].size != s.items[1].size
        assert s.caption.endswith(f"{s.relation} {s.items[1].words()}")


def _caption_from_pixels_layout(scene) -> str:
    """The caption worked out from what is drawn alone (sizes and centres), not from how the scene was drawn."""
    items = sorted(scene.items, key=lambda i: -i.radius)
    if len(items) == 1:
        return items[0].words()
    (big, small) = items
    dx, dy = big.x - small.x, big.y - small.y
    relation = ("left of" if dx < 0 else "right of") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")
    return f"{big.words()} {relation} {small.words()}"


def test_the_caption_is_a_function_of_the_picture():
    # The larger shape comes first and the relation is the larger's place next to the smaller: one caption
    # per picture, so a captioner is never asked to guess a coin toss.
    examples = shapes.generate(3, {"train": 200, "dev": 1, "test": 1})["train"]
    two = [e.scene for e in examples if len(e.scene.items) == 2]
    assert len(two) > 100
    for s in two:
        assert s.items[0].radius > s.items[1].radius and s.caption == _caption_from_pixels_layout(s)
    # either order typed in draws a picture whose caption is the canonical one
    for typed in ("a small red circle above a large blue square", "a large blue square below a small red circle"):
        scene = shapes.scene_from_caption(typed)
        assert scene.caption == "a large blue square below a small red circle"
        assert scene.caption == _caption_from_pixels_layout(scene)


def test_render_draws_the_shape_in_its_colour():
    scene = shapes.scene_from_caption("a large blue square")
    pixels = np.asarray(shapes.render(scene), dtype=np.int64)
    item = scene.items[0]
    centre = pixels[int(item.y), int(item.x)]
    assert np.abs(centre - np.asarray(item.rgb)).max() < 50  # the colour, up to noise
    assert shapes.render(scene).size == (shapes.CANVAS, shapes.CANVAS)


def test_render_draws_the_pixels_it_always_drew():
    # The checked-in TSVs are drawn on demand, so render() is part of the data set: a faster render must
    # draw the same pixels, or every measured result (and the PNGs already on disk) silently stops matching.
    digest = hashlib.sha256()
    for row in shapes.read_rows(CHECKED_IN / "test.tsv")[:3]:
        digest.update(np.asarray(shapes.render(shapes.Scene.from_json(row["scene"]))).tobytes())
    assert digest.hexdigest() == "b68df60289660a5498ecdcb3b93a59f5dc79d7ffa4becbedbe6314c5e76e29b8"


def test_render_fast_draws_what_render_draws_up_to_rounding():
    # Training pictures drawn afresh come from render_fast: they must be the data set's pictures (same shapes,
    # colours, background, noise), not merely look alike, or training and test differ in kind.
    scenes = [e.scene for e in shapes.generate(4, SMALL)["dev"]]
    fast = np.stack([shapes.render_fast(s) for s in scenes])
    diff = np.abs(np.stack([np.asarray(shapes.render(s)) for s in scenes]).astype(np.int64) - fast)
    assert fast.dtype == np.uint8 and fast.shape == (len(scenes), shapes.CANVAS, shapes.CANVAS, 3)
    assert diff.mean() < 0.2 and (diff > 1).mean() < 1e-4 and diff.max() <= 8


def test_redraw_is_a_new_picture_of_the_same_caption():
    scene = shapes.scene_from_caption("a large blue square below a small red circle")
    again = [shapes.redraw(scene, rng) for rng in [np.random.default_rng(0)] for _ in range(60)]
    assert all(s.caption == scene.caption == _caption_from_pixels_layout(s) for s in again)
    assert len({(round(s.items[0].x), round(s.items[0].y)) for s in again}) > 40  # a new layout each time
    assert len({(s.seed, s.top, s.items[1].rgb) for s in again}) == 60  # new noise, background, colour jitter
    assert shapes.redraw(scene, np.random.default_rng(7)) == shapes.redraw(scene, np.random.default_rng(7))
    one = shapes.scene_from_caption("a medium green star")
    assert {shapes.redraw(one, np.random.default_rng(k)).caption for k in range(5)} == {"a medium green star"}


def test_scene_from_caption_round_trips_and_refuses_other_text():
    for e in shapes.generate(2, SMALL)["dev"][:20]:
        assert shapes.scene_from_caption(e.scene.caption).caption == e.scene.caption
    assert shapes.scene_from_caption("A Small RED circle.").caption == "a small red circle"
    with pytest.raises(ToolchainError, match=r"not a shapes caption; write one like"):
        shapes.scene_from_caption("a witty, moving film")


def test_images_are_drawn_on_first_read_only(tmp_path):
    path = shapes.write(tmp_path, 0, SMALL)["dev"]
    assert not (tmp_path / "images").exists()
    data = read_texts(path, limit=7)
    assert len(data.images) == 7 and all(p.is_file() for p in data.images)
    assert data.texts == [str(p) for p in data.images]  # what the runtime's image methods take
    assert data.labels == [int(r["label"]) for r in shapes.read_rows(path)[:7]]
    assert len(list((tmp_path / "images" / "dev").glob("*.png"))) == 7  # only what was asked for
    stamp = data.images[0].stat().st_mtime_ns
    assert shapes.materialize(path) == SMALL["dev"] - 7 and data.images[0].stat().st_mtime_ns == stamp


def test_a_row_pointing_outside_the_folder_is_refused(tmp_path):
    path = shapes.write(tmp_path, 0, SMALL)["dev"]
    path.write_text(path.read_text().replace("images/dev/00000.png", "../../escape.png"))
    with pytest.raises(ToolchainError, match="points outside"):
        shapes.materialize(path)


def test_command_line_writes_the_splits(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shapes, "SIZES", SMALL)
    assert shapes.main(["--out", str(tmp_path), "--seed", "4"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.tsv")) == ["dev.tsv", "test.tsv", "train.tsv"]
    header = (tmp_path / "dev.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == shapes.COLUMNS and "train:" in capsys.readouterr().out
