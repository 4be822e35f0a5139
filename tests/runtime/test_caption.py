"""The Captioner runtime class: load() returns it for image-to-text artifacts; caption() takes every kind of image
input, gives one image's caption as a str and a list's as a list, batches without changing a caption, decodes with
the encoder-decoder loop of runtime/seq2seq.py; bad input and the wrong task are one sentence each."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from toolchain.data import shapes
from toolchain.runtime import Captioner, InputError, ToolchainError, load, read_manifest
from toolchain.runtime import seq2seq as seq2seq_mod

SCENES = ["a large red circle above a small blue square", "a small green star", "a medium yellow triangle left of a "
          "large purple circle", "a large orange square below a small red triangle"]


def one_sentence(message: str) -> bool:
    return message.endswith(".") and message.count(". ") == 0


@pytest.fixture(scope="module")
def model(caption_artifact):
    return load(caption_artifact)


@pytest.fixture(scope="module")
def pictures():
    return [shapes.render(shapes.scene_from_caption(c)) for c in SCENES]


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_load_returns_a_captioner_with_its_tokenizer_and_preprocess(model, caption_artifact):
    assert type(model) is Captioner and model.task.method == "caption"
    m = read_manifest(caption_artifact)
    assert m.tokenizer_path() == caption_artifact / "tokenizer.json" and m.preprocess.height == 32
    assert set(m.variant("fp32").components) == {"encoder", "decoder"}
    assert [i.name for i in m.inputs] == ["pixel_values"] and m.generation.eos_token_ids


def test_every_kind_of_input_gives_the_same_caption(model, pictures, tmp_path):
    path = tmp_path / "scene.png"
    pictures[0].save(path)
    want = model.caption(pictures[0])
    assert isinstance(want, str) and want
    for item in (str(path), path, png(pictures[0]), np.asarray(pictures[0])):
        assert model.caption(item) == want
    assert model.caption([pictures[0]]) == [want]
    assert model.caption(np.stack([np.asarray(p) for p in pictures[:2]])) == [want, model.caption(pictures[1])]


def test_a_batch_captions_each_image_as_alone(caption_artifact, pictures):
    alone = [load(caption_artifact).caption(p) for p in pictures]
    assert load(caption_artifact, batch_size=3).caption(pictures) == alone
    assert load(caption_artifact).caption(pictures) == alone


def test_caption_ids_are_the_loop_s_greedy_ids(model, pictures):
    """caption() is the tokenizer's decoding of decode_pixels(), which is Seq2Seq.decode on the pixel values."""
    feeds, mask = model.encode(pictures)
    assert mask.shape == (len(pictures), 1) and feeds["pixel_values"].shape == (len(pictures), 3, 32, 32)
    ids = model.decode_pixels(feeds["pixel_values"], 12)
    assert ids == model.seq2seq.decode(feeds, seq2seq_mod.Search(12))
    assert all(len(row) <= 12 for row in ids)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model.manifest.root / "tokenizer.json"))
    assert model.caption(pictures, max_new_tokens=12) == tok.decode_batch(ids, skip_special_tokens=True)


def test_beam_search_runs_and_scores_at_least_greedy(model, pictures):
    beams = model.caption(pictures, max_new_tokens=8, beam_size=3)
    assert len(beams) == len(pictures) and all(isinstance(c, str) for c in beams)


@pytest.mark.parametrize("bad, match", [
    ([], r"no images were given"),
    (b"not an image at all", r"image 0 \(19 bytes\) is not an image Pillow can read"),
    ("no-such-file.png", r"is not an existing image file"),
    (np.zeros((8, 8, 3), dtype=np.float32), r"float32 array; pass uint8"),
    (3.5, r"images must be one image or a list of images"),
])
def test_bad_input_is_one_sentence(model, bad, match):
    with pytest.raises(InputError, match=match) as err:
        model.caption(bad)
    assert one_sentence(str(err.value))


def test_truncated_and_oversized_images_are_refused(model, pictures):
    data = png(pictures[0])
    with pytest.raises(InputError, match="truncated or damaged image") as err:
        model.caption(data[: len(data) // 2])
    assert one_sentence(str(err.value))
    small = load(model.manifest.root)
    small.max_pixels = 1000
    with pytest.raises(InputError, match="over the limit of 1,000") as err:
        small.caption(pictures[0])
    assert one_sentence(str(err.value))


def test_other_modes_are_converted(model, pictures):
    want = model.caption(pictures[0])
    rgba = pictures[0].copy()
    rgba.putalpha(255)
    assert model.caption(rgba) == want  # opaque alpha composited onto white is the picture itself
    assert isinstance(model.caption(pictures[0].convert("L")), str)
    sixteen = Image.fromarray((np.asarray(pictures[0].convert("L")).astype(np.uint16) * 257), "I;16")
    assert model.caption(sixteen) == model.caption(pictures[0].convert("L"))


def test_bad_settings_and_pixels(model):
    with pytest.raises(InputError, match="max_new_tokens"):
        model.caption(np.zeros((32, 32, 3), np.uint8), max_new_tokens=0)
    with pytest.raises(InputError, match="beam_size must be at most"):
        model.caption(np.zeros((32, 32, 3), np.uint8), beam_size=10_000)
    with pytest.raises(InputError, match=r"pixels must be a float array \(N, 3, 32, 32\)"):
        model.decode_pixels(np.zeros((1, 3, 8, 8), np.float32))


def test_other_tasks_methods_refuse(model):
    with pytest.raises(ToolchainError, match=r"^translate\(\) is not available for an image-to-text artifact; use "
                                             r"caption\(\) instead\.$"):
        model.translate("hello")


def test_a_text_artifact_asked_to_caption(tiny_artifact, pictures):
    text = load(tiny_artifact("bert", "text-classification"))
    with pytest.raises(ToolchainError, match=r"^caption\(\) is not available for a text-classification artifact; "
                                             r"use classify\(\) instead\.$"):
        text.caption([pictures[0]])


def test_a_manifest_without_a_tokenizer_is_refused(caption_artifact, tmp_path):
    broken = shutil.copytree(caption_artifact, tmp_path / "broken")
    data = json.loads((broken / "manifest.json").read_text())
    data["tokenizer"] = None
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ToolchainError, match="names no tokenizer") as err:
        load(broken)
    assert one_sentence(str(err.value))


def test_max_new_tokens_is_capped_at_the_decoder_positions(model):
    out = model.caption(np.zeros((32, 32, 3), np.uint8), max_new_tokens=500)
    assert len(out.split()) <= model.manifest.max_length
