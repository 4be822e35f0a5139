"""Users' own nn.Modules through export: a module dir (written here as `toolchain train` writes it) exports with
the torch exporter, passes parity against PyTorch on uneven batches, and the torch-free runtime serves it.

The tiny modules live in tiny_torch_modules.py (GRU, LSTM, TransformerEncoder; one that reads padding).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_torch_modules as tiny
from toolchain.cli.commands import EXIT_USER_ERROR, main
from toolchain.export import export, torch_export
from toolchain.export.modules import MODULE_FILE, WEIGHTS_FILE, IOSpec, TensorIO
from toolchain.export.parity import PARITY_TEXTS
from toolchain.export.reference import ModuleReference
from toolchain.export.source import resolve
from toolchain.runtime import ParityError, ToolchainError, load
from toolchain.runtime.errors import SourceError
from toolchain.runtime.manifest import read_manifest

ARCHS = ("gru", "lstm", "transformer")
OWN_CODE = True  # the tiny modules are this test suite's own code: trusted on purpose (tests/test_security.py)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ARCH -> (module dir, artifact), each exported once per module (shared: tests that change one copy it)."""
    root, made = tmp_path_factory.mktemp("custom"), {}

    def get(arch: str) -> tuple[Path, Path]:
        if arch not in made:
            src = tiny.write_module_dir(root / f"{arch}-src", f"build_{arch}")
            made[arch] = (src, root / f"{arch}-art")
            export(src, made[arch][1], trust_remote_code=OWN_CODE)
        return made[arch]

    return get


def _exported_with_torch(manifest: dict, dynamo_only: bool) -> None:
    """The torch exporter wrote the graph: dynamo, or TorchScript with dynamo's failure recorded. torch.export
    (2.13) infers a static sequence length for nn.GRU / nn.LSTM, mostly: those usually take the fallback."""
    assert manifest["exporter"] == "torch"
    if manifest["exporter_method"] == "dynamo":
        assert "exporter_fallback" not in manifest
    else:
        assert not dynamo_only and manifest["exporter_method"] == "torchscript"
        assert manifest["exporter_fallback"].startswith("dynamo: ")


@pytest.mark.parametrize("arch", ARCHS)
def test_export_parity_and_runtime(exported, arch):
    src, art = exported(arch)
    m = read_manifest(art)
    raw = json.loads((art / "manifest.json").read_text())
    _exported_with_torch(raw, dynamo_only=arch == "transformer")
    assert m.task == "text-classification" and m.labels == tiny.LABELS and m.max_length == 32 and m.opset >= 17
    assert m.source.kind == "module" and m.source.weights == (WEIGHTS_FILE,) and len(m.source.weights_sha256) == 64
    assert m.source.model_type == f"tiny_torch_modules:build_{arch}"
    assert [(i.name, i.dims) for i in m.inputs] == [("input_ids", ("batch", "sequence")),
                                                    ("attention_mask", ("batch", "sequence"))]
    assert (m.tokenizer.pad_id, m.tokenizer.pad_token) == (0, "[PAD]")
    assert (art / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    parity = m.variants["fp32"].metrics["parity"]
    assert parity["texts"] == 7 and parity["tokens_match"]
    assert max(parity["max_abs_diff"], parity["padding_diff"]) < 1e-4
    # The runtime, unchanged, against PyTorch on each text alone: a batch of 7 uneven texts and batches of 1.
    model = load(art)
    theirs = tiny.torch_scores(src, PARITY_TEXTS).numpy()
    with pytest.warns(UserWarning, match="truncated"):
        batch = model.scores(PARITY_TEXTS)
    np.testing.assert_allclose(batch, theirs, atol=1e-5)
    with pytest.warns(UserWarning, match="truncated"):
        alone = np.concatenate([model.scores([t]) for t in PARITY_TEXTS])
    np.testing.assert_allclose(alone, theirs, atol=1e-5)
    assert model.classify(["a witty film"])[0]["label"] in tiny.LABELS


def test_module_reading_padding_fails_parity(tmp_path):
    src = tiny.write_module_dir(tmp_path / "src", "build_reads_padding", weights_from="build_gru")
    with pytest.raises(ParityError, match="a padded batch differs from each item alone"):
        export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert not (tmp_path / "art").exists()


def test_an_input_forward_ignores_stays_in_the_graph(tmp_path):
    """TorchScript drops an input forward() never reads (dynamo may fix its sizes): the exporter puts it back with
    the IO spec's dynamic axes, so the runtime feeds it and parity runs the module as it is."""
    import onnx

    from toolchain.export.modules import read_module_dir

    src = tiny.write_module_dir(tmp_path / "src", "build_reads_padding", weights_from="build_gru")
    module, spec = read_module_dir(src).build()
    example = spec.example([3, 5])
    path = tmp_path / "model.onnx"
    torch_export.run_torchscript(module, spec, (example["input_ids"], example["attention_mask"]), path, None)
    assert [v.name for v in onnx.load(str(path)).graph.input] == ["input_ids"]
    torch_export.finish_graph(path, spec, example)
    graph = onnx.load(str(path)).graph
    assert [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in graph.input] == [
        ("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"])]
    assert not graph.value_info


def test_wrong_graph_fails_parity(exported, tmp_path, monkeypatch):
    """An exporter that writes another graph than the module's (here: a shifted head bias) fails the export."""
    src, _ = exported("gru")
    real = torch_export.run_dynamo

    def shifted(module, *args):  # the exporter's own copy of the module; the reference keeps its weights
        with torch.no_grad():
            module.head.bias += 0.05
        return real(module, *args)

    monkeypatch.setattr(torch_export, "run_dynamo", shifted)
    with pytest.raises(ParityError, match=r"max \|onnx - torch\| = 0\.05"):
        export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert not (tmp_path / "art").exists()


def test_torchscript_fallback_is_recorded(exported, tmp_path, monkeypatch):
    src, _ = exported("gru")

    def no_dynamo(*args, **kwargs):
        raise RuntimeError("dynamo cannot trace this")

    monkeypatch.setattr(torch_export, "run_dynamo", no_dynamo)
    manifest = export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert (manifest["exporter"], manifest["exporter_method"]) == ("torch", "torchscript")
    assert manifest["exporter_fallback"] == "dynamo: dynamo cannot trace this"
    assert read_manifest(tmp_path / "art").exporter_info.method == "torchscript"
    assert manifest["inputs"][0]["dims"] == ["batch", "sequence"]  # dynamic axes from the IO spec
    assert manifest["variants"]["fp32"]["metrics"]["parity"]["max_abs_diff"] < 1e-4


def test_dynamo_graph_with_a_fixed_axis_falls_back(exported, tmp_path, monkeypatch):
    """A dynamo graph whose declared-dynamic axes came out fixed (here: exported with no dynamic shapes) takes one
    length only: the exporter refuses it, TorchScript writes the graph instead, and the manifest says why."""
    src, _ = exported("gru")
    real = torch_export.run_dynamo

    def static(module, spec, *args):
        fixed = IOSpec(tuple(TensorIO(t.name, t.dtype, {}) for t in spec.inputs), spec.outputs, spec.example)
        return real(module, fixed, *args)

    monkeypatch.setattr(torch_export, "run_dynamo", static)
    manifest = export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert manifest["exporter_method"] == "torchscript"
    assert manifest["exporter_fallback"].startswith("dynamo: the graph fixed dynamic axes to the example's sizes: "
                                                    "input_ids axis 0 (batch) = 2, input_ids axis 1 (sequence) = 5")
    assert manifest["inputs"][0]["dims"] == ["batch", "sequence"]


@pytest.mark.parametrize("builder, match", [
    ("no_such_builder", "has no function 'no_such_builder'"),
    ("build_not_module", "returned a object where an nn.Module is needed"),
    ("build_wrong_io", "forward\\(\\) returns 1 value\\(s\\) but the IO spec names 2 output"),
])
def test_bad_entry_points(tmp_path, builder, match, capsys):
    src = tiny.write_module_dir(tmp_path / "src", builder, weights_from="build_gru")
    with pytest.raises(ToolchainError, match=match) as info:
        export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert "\n" not in str(info.value) and str(info.value).endswith(".")
    assert main(["export", str(src), "--out", str(tmp_path / "art"), "--trust-remote-code"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(re.findall(match, err)) == 1
    assert not (tmp_path / "art").exists()


def test_labels_must_name_every_class(tmp_path):
    src = tiny.write_module_dir(tmp_path / "src", "build_gru")
    record = json.loads((src / MODULE_FILE).read_text())
    (src / MODULE_FILE).write_text(json.dumps({**record, "labels": ["only-one"]}))
    with pytest.raises(SourceError, match=r"names labels \['only-one'\] for a module with 2 classes; write one label"):
        export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert not (tmp_path / "art").exists()


def test_entry_point_that_cannot_be_imported(tmp_path):
    src = tiny.write_module_dir(tmp_path / "src", "build_gru")
    record = json.loads((src / MODULE_FILE).read_text())
    (src / MODULE_FILE).write_text(json.dumps({**record, "entry": "no_such_package_xyz.models:build"}))
    with pytest.raises(SourceError, match="'no_such_package_xyz.models:build' cannot be imported"):
        export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert not (tmp_path / "art").exists()


def test_task_must_agree_and_pickles_are_refused(exported, tmp_path):
    src, _ = exported("gru")
    assert resolve(src, trust_remote_code=OWN_CODE).kind == "module"
    assert resolve(src, trust_remote_code=OWN_CODE).task == "text-classification"
    with pytest.raises(SourceError, match="trained for 'text-classification', not 'feature-extraction'; pass --task"):
        export(src, tmp_path / "art", task="feature-extraction", trust_remote_code=OWN_CODE)
    pickled = tmp_path / "pickled"
    shutil.copytree(src, pickled)
    (pickled / WEIGHTS_FILE).unlink()
    (pickled / "model.pt").write_bytes(b"a pickle, never loaded")
    with pytest.raises(SourceError, match="only in pickle format"):
        export(pickled, tmp_path / "art", trust_remote_code=OWN_CODE)
    assert not (tmp_path / "art").exists()


def test_quantize_and_validate_rebuild_the_module(exported, tmp_path, monkeypatch):
    _, shared = exported("gru")
    art = shutil.copytree(shared, tmp_path / "art")
    assert main(["quantize", str(art), "--mode", "int8-dynamic"]) == 0
    assert "int8" in read_manifest(art).variants
    built = []
    real = ModuleReference.__init__
    monkeypatch.setattr(ModuleReference, "__init__", lambda self, *a, **k: (built.append(a), real(self, *a, **k))[1])
    assert main(["validate", str(art), "--trust-remote-code"]) == 0
    assert built and Path(built[0][0]) == Path(read_manifest(art).source.path)
    assert load(art, variant="int8").classify(["great"])[0]["label"] in tiny.LABELS


def test_bench_vs_pytorch(exported, tmp_path):
    from toolchain.bench.core import bench

    _, shared = exported("gru")
    art = shutil.copytree(shared, tmp_path / "art")
    report = bench(art, real=True, runs=2, batches=(1, 2), seqs=(8,), trust_remote_code=OWN_CODE)
    assert set(report["rows"]) == {"fp32", "pytorch"}, report["notes"]
    torch_row = report["rows"]["pytorch"]
    assert [(s["batch"], s["seq"]) for s in torch_row["shapes"]] == [(1, 8), (2, 8)]
    assert torch_row["real"]["sentences_per_s"] > 0
    assert torch_row["bytes"] == (shared.parent / "gru-src" / WEIGHTS_FILE).stat().st_size


def test_bench_vs_pytorch_needs_trust_for_outside_code(exported, tmp_path, capsys):
    """The PyTorch baseline imports the module dir's entry point: outside the toolchain it runs only when
    trusted (as export and validate ask); without --vs-pytorch nothing is imported and the bench runs."""
    from toolchain.bench.core import bench

    _, shared = exported("gru")
    art = shutil.copytree(shared, tmp_path / "art")
    with pytest.raises(SourceError, match=r"tiny_torch_modules:build_gru.*--trust-remote-code"):
        bench(art, runs=2, batches=(1,), seqs=(8,))
    assert main(["bench", str(art), "--vs-pytorch", "--runs", "2", "--batch", "1", "--seq", "8"]) == EXIT_USER_ERROR
    assert "--trust-remote-code" in capsys.readouterr().err
    report = bench(art, vs_pytorch=False, real=False, runs=2, batches=(1,), seqs=(8,))
    assert set(report["rows"]) == {"fp32"}


def test_readme_example_exports(tmp_path):
    """The README's "Your own nn.Module" example, as a user copies it, trains nothing but exports with parity."""
    from safetensors.torch import save_file

    from toolchain.export.modules import build_module, module_dir_record

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your own nn.Module", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "readme_sentiment.py").write_text(code, encoding="utf-8")
    entry = section.split('module = "', 1)[1].split('"', 1)[0].replace("sentiment", "readme_sentiment")
    src = tmp_path / "src"
    src.mkdir()
    tok = tiny.tokenizer()
    tok.save(str(src / "tokenizer.json"))
    config = {"vocab_size": tok.get_vocab_size(), "hidden": 16}
    module, _ = build_module(entry, config, tmp_path)
    save_file(module.state_dict(), str(src / WEIGHTS_FILE))
    record = module_dir_record(entry, config, "text-classification", tiny.LABELS, 32, 0, tmp_path)
    (src / MODULE_FILE).write_text(json.dumps(record), encoding="utf-8")
    manifest = export(src, tmp_path / "art", trust_remote_code=OWN_CODE)
    _exported_with_torch(manifest, dynamo_only=False)
    assert manifest["variants"]["fp32"]["metrics"]["parity"]["tokens_match"]


def test_a_module_dir_built_by_outside_code_needs_trust(tmp_path, exported):
    """Exporting (or validating against) someone else's module dir imports and runs its Python code: refused
    in one sentence naming the entry point unless trusted; the seed modules in this package need no flag."""
    import json

    src = tiny.write_module_dir(tmp_path / "src", "build_gru")
    with pytest.raises(SourceError, match=r"built by its own Python code \(tiny_torch_modules:build_gru.*--trust-remote-code"):
        export(src, tmp_path / "art")
    assert not (tmp_path / "art").exists()
    with pytest.raises(SourceError, match="--trust-remote-code"):
        ModuleReference(src, "text-classification")
    record = json.loads((src / MODULE_FILE).read_text())
    assert resolve(src, trust_remote_code=OWN_CODE).remote_code
    record["entry"] = "toolchain.train.modules.gru:build"  # this package's own code: trusted as it is
    (src / MODULE_FILE).write_text(json.dumps(record))
    assert not resolve(src).remote_code
