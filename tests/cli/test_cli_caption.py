"""`toolchain run` on a captioner: a caption per image file (with the decoding options), one-sentence errors."""

from __future__ import annotations

import json

from toolchain.cli.commands import main
from toolchain.data import shapes
from toolchain.runtime import load


def picture(tmp_path, caption: str = "a large red circle above a small blue square"):
    path = tmp_path / "picture.png"
    shapes.render(shapes.scene_from_caption(caption)).save(path)
    return path


def test_run_prints_a_caption_per_image(caption_artifact, tmp_path, capsys):
    image = picture(tmp_path)
    assert main(["run", str(caption_artifact), str(image), str(image), "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    want = load(caption_artifact).caption(str(image), max_new_tokens=6)
    assert out.splitlines() == [f"{image}: {want}"] * 2 and "variant fp32 on cpu" in err


def test_run_json(caption_artifact, tmp_path, capsys):
    assert main(["run", str(caption_artifact), str(picture(tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["task"] == "image-to-text" and isinstance(out["caption"][0], str)


def test_run_on_bad_images_is_one_sentence(caption_artifact, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    for arg, words in [(str(tmp_path / "notes.txt"), "is not an image Pillow can read"),
                       ("a witty film", "is not an existing image file")]:
        assert main(["run", str(caption_artifact), arg]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: image 0 ") and words in err and err.count("\n") == 1 and "Traceback" not in err


def test_info_lists_both_graphs(caption_artifact, capsys):
    assert main(["info", str(caption_artifact)]) == 0
    out = capsys.readouterr().out
    assert "image-to-text" in out and "pixel_values" in out and "encoder.onnx, decoder.onnx" in out
