"""`toolchain run` and `toolchain info` on an image classifier: labels for image files, one-sentence errors."""

from __future__ import annotations

import json

from tiny_vision import LABELS, tiny_vit, vit_artifact  # noqa: F401  (fixtures)
from toolchain.cli.commands import main
from toolchain.data import shapes


def picture(tmp_path, caption: str = "a large red circle above a small blue square"):
    path = tmp_path / "picture.png"
    shapes.render(shapes.scene_from_caption(caption)).save(path)
    return path


def test_run_prints_a_label_per_image(vit_artifact, tmp_path, capsys):
    image = picture(tmp_path)
    assert main(["run", str(vit_artifact), str(image), str(image)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{image}: ") and lines[0].split(": ")[1].split(" (")[0] in LABELS
    assert "variant fp32 on cpu" in err


def test_run_json(vit_artifact, tmp_path, capsys):
    assert main(["run", str(vit_artifact), str(picture(tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["task"] == "image-classification" and out["classify_image"][0]["label"] in LABELS


def test_run_on_bad_images_is_one_sentence(vit_artifact, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    for arg, words in [(str(tmp_path / "notes.txt"), "is not an image Pillow can read"),
                       ("great film", "is not an existing image file")]:
        assert main(["run", str(vit_artifact), arg]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: image 0 ") and words in err and err.count("\n") == 1 and "Traceback" not in err


def test_info_shows_the_labels(vit_artifact, capsys):
    assert main(["info", str(vit_artifact)]) == 0
    out = capsys.readouterr().out
    assert "image-classification" in out and ", ".join(LABELS) in out and "pixel_values" in out
