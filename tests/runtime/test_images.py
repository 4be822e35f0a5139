"""Image input of the runtime: every accepted kind of item gives the same pixels, modes become RGB explicitly,
bad input is one sentence, and the preprocessing equals transformers' image processor."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from toolchain.data import shapes
from toolchain.runtime.errors import ArtifactError, InputError
from toolchain.runtime.images import as_images, looks_like_image, pixel_values, to_rgb
from toolchain.runtime.sections import Preprocess

PRE = Preprocess(height=32, width=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def picture() -> Image.Image:
    return shapes.render(shapes.scene_from_caption("a large red circle above a small blue square"))


def png(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims WIDTH x HEIGHT pixels and whose data is empty: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def one_sentence(message: str) -> bool:
    return message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_paths_bytes_pil_and_arrays_give_the_same_pixels(tmp_path):
    im = picture()
    (tmp_path / "a.png").write_bytes(png(im))
    arr = np.asarray(im)
    items = [str(tmp_path / "a.png"), tmp_path / "a.png", png(im), bytearray(png(im)), im, arr]
    out = pixel_values(as_images(items), PRE)
    assert out.shape == (6, 3, 32, 32) and out.dtype == np.float32
    assert all(np.array_equal(out[0], row) for row in out[1:])
    assert pixel_values(as_images(np.stack([arr, arr])), PRE).shape == (2, 3, 32, 32)  # NHWC batch
    assert pixel_values(as_images(im), PRE).shape == (1, 3, 32, 32)  # one image, not a list


def test_preprocessing_equals_the_hugging_face_image_processor():
    transformers = pytest.importorskip("transformers")
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(PRE.mean),
                                               image_std=list(PRE.std))
    images = [picture(), picture().resize((97, 61)), picture().resize((20, 45))]
    ours = pixel_values(as_images(images), PRE)
    theirs = processor(images=images, return_tensors="np")["pixel_values"]
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.abs(pixel_values(as_images(images), Preprocess(height=32, width=32)) - theirs).max() > 0.1


def test_modes_are_converted_to_rgb_explicitly():
    gray = np.full((4, 4), 77, np.uint8)
    assert np.asarray(as_images(gray)[0]).tolist() == np.full((4, 4, 3), 77).tolist()
    assert as_images(Image.fromarray(gray).convert("1"))[0].mode == "RGB"
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)  # opaque red stays red; transparent pixels become white (as transformers does)
    out = np.asarray(as_images(rgba)[0])
    assert out[0, 0].tolist() == [200, 10, 10] and out[1, 1].tolist() == [255, 255, 255]
    assert np.asarray(as_images(Image.fromarray(rgba).convert("LA"))[0])[1, 1].tolist() == [255, 255, 255]
    sixteen = Image.open(io.BytesIO(png(Image.fromarray(np.array([[0, 257 * 100], [65535, 65535]], np.uint16)))))
    assert sixteen.mode.startswith("I")
    assert np.asarray(as_images(sixteen)[0])[..., 0].tolist() == [[0, 100], [255, 255]]  # scaled, not clipped
    assert np.asarray(as_images(np.array([[65535]], np.uint16))[0]).tolist() == [[[255, 255, 255]]]
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    palette.info["transparency"] = 0
    assert np.asarray(as_images(Image.open(io.BytesIO(png(palette))))[0]).tolist() == [[[255, 255, 255], [30, 60, 90]]]
    assert as_images(picture().convert("CMYK"))[0].mode == "RGB"


def test_bad_input_is_one_sentence_each(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    whole = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    cases = {
        "not an image": ([str(tmp_path / "notes.txt")], "is not an image Pillow can read"),
        "text": (["great film"], "is not an existing image file"),
        "truncated": ([whole[: len(whole) // 2]], "is a truncated or damaged image"),
        "huge": ([header_only_png(7000, 7000)], "over the limit of 40,000,000"),
        "huger than Pillow's limit": ([header_only_png(20000, 20000)], "more pixels than Pillow's own limit"),
        "empty list": ([], "no images were given (an empty list)"),
        "empty bytes": ([b""], "is empty bytes"),
        "channels first": ([np.zeros((3, 16, 16), np.uint8)], "channels first; pass HWC"),
        "float": ([np.zeros((8, 8, 3), np.float32)], "is a float32 array; pass uint8"),
        "two channels": ([np.zeros((8, 8, 2), np.uint8)], "pass HW (grayscale) or HWC with 1, 3 or 4"),
        "float mode": ([Image.fromarray(np.zeros((4, 4), np.float32))], "mode F"),
        "no pixels": ([np.zeros((0, 5, 3), np.uint8)], "has no pixels"),
        "not an item": ([3.5], "is float, not an image"),
        "not a list": ({"a": 1}, "images must be one image or a list of images"),
    }
    for name, (given, words) in cases.items():
        with pytest.raises(InputError) as err:
            as_images(given)
        assert words in str(err.value) and one_sentence(str(err.value)), (name, str(err.value))


def test_the_pixel_limit_is_checked_before_decoding():
    with pytest.raises(InputError, match="over the limit of 100"):
        as_images(picture(), max_pixels=100)
    assert len(as_images(picture(), max_pixels=64 * 64)) == 1


def test_what_looks_like_an_image_to_a_text_model():
    assert looks_like_image(png(picture())) and looks_like_image(picture()) and looks_like_image(np.zeros((4, 4, 3)))
    assert not any(looks_like_image(x) for x in ("a.png", b"bytes", np.array(["a", "b"]), np.zeros(3), None))


def test_preprocess_settings_are_checked():
    assert Preprocess.from_dict(PRE.to_dict()) == PRE
    for bad, words in [({"resample": "sharp"}, "resample should be one of"), ({"std": [1, 0, 1]}, "std should be"),
                       ({"mean": [0.5]}, "mean and std should hold 3")]:
        with pytest.raises(ArtifactError, match=words):
            Preprocess.from_dict({**PRE.to_dict(), **bad}).checked("manifest.json")
    with pytest.raises(ArtifactError, match="cannot be read"):
        Preprocess.from_dict({"height": "tall"})
    assert to_rgb(picture()).mode == "RGB"
