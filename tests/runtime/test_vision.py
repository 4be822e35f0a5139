"""The ImageClassifier runtime class: load() returns it for image-classification artifacts, it classifies every
kind of image input, refuses text methods, and a text artifact refuses images, each in one sentence."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tiny_vision import LABELS, shapes_dev, tiny_vit, vit_artifact  # noqa: F401  (fixtures)
from toolchain.data import shapes
from toolchain.runtime import ArtifactError, ImageClassifier, InputError, ToolchainError, load, read_manifest


def one_sentence(message: str) -> bool:
    return message.endswith(".") and message.count(". ") == 0


@pytest.fixture(scope="module")
def model(vit_artifact):
    return load(vit_artifact)


def dev_images(table, n: int) -> list:
    shapes.materialize(table)
    return sorted((table.parent / "images" / "dev").glob("*.png"))[:n]


def test_load_returns_an_image_classifier_with_labels_and_no_tokenizer(model, vit_artifact):
    assert type(model) is ImageClassifier and model.task.method == "classify_image"
    m = read_manifest(vit_artifact)
    assert m.labels == LABELS and m.tokenizer_path() is None and m.preprocess.height == 32
    assert not (vit_artifact / "tokenizer.json").exists()


def test_classify_and_scores(model, shapes_dev):
    images = dev_images(shapes_dev, 5)
    probs = model.scores(images)
    assert probs.shape == (5, 4) and probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    out = model.classify(images)
    assert out == model.classify_image(images)
    assert [r["label"] for r in out] == [LABELS[i] for i in probs.argmax(axis=1)]
    one = model.classify(str(images[0]))
    assert len(one) == 1 and one[0]["score"] == pytest.approx(float(probs[0].max()), abs=1e-6)


def test_batches_of_batch_size_give_the_same_scores(vit_artifact, shapes_dev):
    images = dev_images(shapes_dev, 7)
    small = load(vit_artifact, batch_size=3)
    assert np.allclose(small.scores(images), load(vit_artifact).scores(images), atol=1e-5)
    with pytest.raises(InputError, match=r"^image 5 \(") as err:  # the item is named in the whole call's numbering
        small.scores(images[:5] + ["nothing-here.png"])
    assert one_sentence(str(err.value))


def test_thread_safe(model):
    images = [np.asarray(shapes.render(shapes.scene_from_caption(c))) for c in
              ("a large red circle", "a small blue star", "a medium green square above a small red triangle")]
    alone = [model.scores([im])[0] for im in images]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda i: model.scores([images[i % 3]])[0], range(18)))
    assert all(np.allclose(t, alone[i % 3], atol=1e-6) for i, t in enumerate(together))


@pytest.mark.parametrize("method, arg", [("embed", ["a"]), ("generate", "a"), ("translate", ["a"])])
def test_text_methods_are_refused(model, method, arg):
    with pytest.raises(ToolchainError, match=rf"^{method}\(\) is not available for an image-classification artifact; "
                                             r"use classify_image\(\) instead\.$"):
        getattr(model, method)(arg)


def test_bad_input_is_one_sentence(model):
    for given, words in [([], "no images were given"), ("great film", "is not an existing image file"),
                         (["great film"], "is not an existing image file"), ([None], "is NoneType, not an image")]:
        with pytest.raises(InputError) as err:
            model.classify(given)
        assert words in str(err.value) and one_sentence(str(err.value))


def test_a_text_artifact_asked_to_classify_images(tiny_artifact):
    text = load(tiny_artifact("bert", "text-classification"))
    image = np.asarray(shapes.render(shapes.scene_from_caption("a large red circle")))
    with pytest.raises(ToolchainError, match=r"^classify_image\(\) is not available for a text-classification "
                                             r"artifact; use classify\(\) instead\.$"):
        text.classify_image([image])
    for given in ([image], image, [b"\x89PNG\r\n\x1a\n..."]):
        with pytest.raises(InputError, match=r"^this text-classification artifact reads text, not images; pass str, "
                                             r"or load an image-classification artifact to classify images\.$"):
            text.classify(given)


def test_a_manifest_without_preprocess_is_refused(vit_artifact, tmp_path):
    art = shutil.copytree(vit_artifact, tmp_path / "art")
    path = art / "manifest.json"
    data = json.loads(path.read_text())
    data.pop("preprocess")
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="has no preprocess section .* re-export the artifact"):
        load(art)
    data["preprocess"] = {**json.loads((vit_artifact / "manifest.json").read_text())["preprocess"], "resample": "x"}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="preprocess.resample should be one of"):
        load(art)
