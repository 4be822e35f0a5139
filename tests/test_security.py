"""Security: no pickle, no remote code unless asked for, a demo that leaks nothing, recipes confined.

The source scan reads the syntax tree (not strings), so a comment or a message that mentions
torch.load does not trip it and an aliased import does not slip past it.
"""

from __future__ import annotations

import ast
import json
import shutil
import socket
from pathlib import Path

import pytest

from toolchain.train.recipe import RecipeError, load_recipe
from toolchain.runtime.errors import SourceError

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("toolchain", "demos", "tests")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
ALLOWED = "# security test: on purpose"  # a line ending with this is exempt (tests of the trusted path)


# -- (a) no pickle, no remote code: the source tree --------------------------------------------------
def _dotted(node: ast.AST) -> str:
    """'torch.load' for torch.load, 'np.load' for np.load, '' for anything not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _root_name(node: ast.AST) -> str:
    """The name a chain of attributes and calls starts from: 'AutoModel' for AutoModel.from_pretrained(x).half()."""
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.value if isinstance(node, ast.Attribute) else node.func
    return node.id if isinstance(node, ast.Name) else ""


# save_pretrained receivers that write no weights (or ONNX, not pickle): tokenizers, configs, processors, ORT models
NO_PICKLE_RECEIVER = ("tok", "config", "processor", "ort")


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Every pickle-loading or remote-code-enabling construct in SOURCE, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> the module or function it stands for
    found: list[str] = []

    lines = source.splitlines()

    def bad(node: ast.AST, what: str) -> None:
        if not lines[node.lineno - 1].rstrip().endswith(ALLOWED):
            found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLE_MODULES:
                    bad(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                bad(node, f"from {node.module} import ...")
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):  # f = torch.load: the alias stands for what it names
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Name, ast.Attribute)) and _dotted(node.value):
            head, _, rest = _dotted(node.value).partition(".")
            target = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
            for name_node in node.targets:
                if isinstance(name_node, ast.Name):
                    aliases[name_node.id] = target
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        if full in ("torch.load", "torch.serialization.load") and not _is_true(_keyword(node, "weights_only")):
            bad(node, f"{name}() without weights_only=True")
        if full in ("torch.save", "torch.serialization.save"):
            bad(node, f"{name}() writes pickle; save safetensors")
        if full in ("numpy.load", "np.load") and _keyword(node, "allow_pickle") is not None \
                and not (isinstance(_keyword(node, "allow_pickle"), ast.Constant) and _keyword(node, "allow_pickle").value is False):
            bad(node, f"{name}() with allow_pickle")
        if full.endswith("read_pickle"):
            bad(node, f"{name}()")
        if _is_true(_keyword(node, "trust_remote_code")):
            bad(node, f"{name}(trust_remote_code=True)")
        if isinstance(node.func, ast.Attribute) and node.func.attr == "save_pretrained" \
                and not _root_name(node.func.value).lower().startswith(NO_PICKLE_RECEIVER) \
                and not _is_true(_keyword(node, "safe_serialization")):
            name = name or f"{_root_name(node.func.value)}(...).save_pretrained"
            bad(node, f"{name}() without safe_serialization=True")
        if full.endswith("TrainingArguments") and _keyword(node, "save_safetensors") is not None \
                and not _is_true(_keyword(node, "save_safetensors")):
            bad(node, f"{name}(save_safetensors=...) other than True")
    for node in ast.walk(tree):  # {"trust_remote_code": True} handed on as **kwargs
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and _is_true(v):
                    bad(node, "{'trust_remote_code': True}")
    return found


def _python_files() -> list[Path]:
    files = [p for d in SCANNED for p in (ROOT / d).rglob("*.py")]
    return sorted(files + list(ROOT.glob("*.py")))


def test_the_source_tree_loads_no_pickle_and_enables_no_remote_code():
    files = _python_files()
    assert len(files) > 20 and ROOT / "toolchain" / "train" / "trainer.py" in files
    problems = [p for f in files for p in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("snippet, what", [
    ("import torch\ntorch.load('w.pt')", "without weights_only=True"),
    ("import torch as T\nT.load('w.pt', weights_only=False)", "without weights_only=True"),
    ("from torch import load\nload('w.pt')", "without weights_only=True"),
    ("import torch\ntorch.save(m.state_dict(), 'w.pt')", "writes pickle"),
    ("import pickle", "import pickle"),
    ("import dill as d", "import dill"),
    ("from cloudpickle import loads", "from cloudpickle"),
    ("import joblib", "import joblib"),
    ("import numpy as np\nnp.load('x.npy', allow_pickle=True)", "allow_pickle"),
    ("import numpy\nflag = True\nnumpy.load('x.npy', allow_pickle=flag)", "allow_pickle"),
    ("import pandas as pd\npd.read_pickle('x')", "read_pickle"),
    ("AutoModel.from_pretrained('x', trust_remote_code=True)", "trust_remote_code=True"),
    ("main_export('x', **{'trust_remote_code': True})", "'trust_remote_code': True"),
    ("model.save_pretrained('out')", "without safe_serialization=True"),
    ("model.save_pretrained('out', safe_serialization=False)", "without safe_serialization=True"),
    ("AutoModel.from_pretrained('x').save_pretrained('o', safe_serialization=False)", "without safe_serialization=True"),
    ("net.save_pretrained('out')", "without safe_serialization=True"),
    ("self.encoder.save_pretrained('out', safe_serialization=False)", "without safe_serialization=True"),
    ("import torch\nf = torch.load\nf('w.pt')", "without weights_only=True"),
    ("from torch import load as L\ng = L\ng('w.pt')", "without weights_only=True"),
    ("import torch\nsave = torch.save\nsave(m, 'w.pt')", "writes pickle"),
])
def test_the_scanner_catches(snippet, what):
    problems = unsafe_calls(snippet)
    assert len(problems) == 1 and what in problems[0], problems


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('w.pt', weights_only=True)",
    "import numpy as np\nnp.load('x.npy')\nnp.load('x.npy', allow_pickle=False)",
    "AutoModel.from_pretrained('x', trust_remote_code=settings.trust_remote_code)",
    "model.save_pretrained('out', safe_serialization=True)\ntok.save_pretrained('out')",
    "tokenizer.save_pretrained('o')\nconfig.save_pretrained('o')\nORTModelForCausalLM.from_pretrained('x').save_pretrained('o')",
    "import torch\nf = torch.load\nf('w.pt', weights_only=True)",
    "msg = 'never torch.load(path) or import pickle'  # strings and comments: torch.load(x)",
])
def test_the_scanner_passes_safe_code(snippet):
    assert unsafe_calls(snippet) == []


# -- (a) pickle-only weights are refused -----------------------------------------------------------
@pytest.fixture(scope="module")
def pickle_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT with its weights saved as pytorch_model.bin (a pickle) and nothing else."""
    import transformers

    src = tiny_model("bert")
    out = tmp_path_factory.mktemp("pickle") / "bert-bin"
    transformers.AutoModel.from_pretrained(str(src)).save_pretrained(str(out), safe_serialization=False)  # security test: on purpose
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.is_file() and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    assert (out / "pytorch_model.bin").is_file() and not list(out.glob("*.safetensors"))
    return out


def test_export_refuses_pickle_only_weights(pickle_model, tmp_path, monkeypatch):
    import optimum.exporters.onnx as onnx_exporter

    from toolchain.export.core import export

    monkeypatch.setattr(onnx_exporter, "main_export", lambda *a, **k: pytest.fail("the exporter must not load it"))
    with pytest.raises(SourceError) as err:
        export(pickle_model, tmp_path / "out")
    message = str(err.value)
    assert "pytorch_model.bin" in message and "convert them to safetensors" in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert not (tmp_path / "out").exists()


def test_train_refuses_pickle_only_weights(pickle_model, tmp_path):
    from toolchain.train.stages import pretrained_dir as _pretrained_dir

    recipe = _recipe(tmp_path, f'pretrained = "{pickle_model}"')
    with pytest.raises(SourceError, match="pickle format .*convert them to safetensors"):
        _pretrained_dir(recipe)


def test_cli_export_of_pickle_weights_is_one_sentence(pickle_model, tmp_path, capsys):
    from toolchain.cli.commands import main

    assert main(["export", str(pickle_model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "safetensors" in err


def test_safetensors_beside_a_bin_file_are_used(tiny_model, tmp_path):
    from toolchain.export.source import resolve

    both = tmp_path / "both"
    shutil.copytree(tiny_model("bert"), both)
    (both / "training_args.bin").write_bytes(b"not loaded")
    assert resolve(both).path == both.resolve()


# -- (b) remote code only on request ---------------------------------------------------------------
REMOTE_CONFIG = """
import os
from transformers import BertConfig

open(os.environ["TOOLCHAIN_TEST_MARKER"], "a").write("config code ran\\n")


class TinyConfig(BertConfig):
    model_type = "tinycustom"
"""
REMOTE_MODEL = """
from transformers import BertModel
from .configuration_tiny import TinyConfig


class TinyModel(BertModel):
    config_class = TinyConfig
"""


@pytest.fixture
def remote_model(tiny_model, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A model dir whose config.json maps (auto_map) to Python files in the dir; the code leaves a marker."""
    out = tmp_path / "remote"
    shutil.copytree(tiny_model("bert"), out)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="tinycustom", architectures=["TinyModel"],
                  auto_map={"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"})
    (out / "config.json").write_text(json.dumps(config))
    (out / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (out / "modeling_tiny.py").write_text(REMOTE_MODEL)
    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("TOOLCHAIN_TEST_MARKER", str(marker))
    return out, marker


def test_export_refuses_remote_code_without_the_flag(remote_model, tmp_path):
    from toolchain.export.core import export

    model, marker = remote_model
    with pytest.raises(SourceError) as err:
        export(model, tmp_path / "out")
    message = str(err.value)
    assert "--trust-remote-code" in message and "auto_map" in message and message.endswith(".")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_export_remote_code_names_the_flag(remote_model, tmp_path, capsys):
    from toolchain.cli.commands import build_parser, main

    assert build_parser().parse_args(["export", "m", "--out", "o"]).trust_remote_code is False
    model, marker = remote_model
    assert main(["export", str(model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --trust-remote-code" in err and not marker.exists()


@pytest.mark.parametrize("flag", [False, True])
def test_the_flag_reaches_the_exporter(tiny_model, remote_model, tmp_path, monkeypatch, flag):
    import optimum.exporters.onnx as onnx_exporter

    from toolchain.cli.commands import main
    from toolchain.runtime.errors import ExportError

    seen = []

    def fake_main_export(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise ValueError("stopped by the test")

    monkeypatch.setattr(onnx_exporter, "main_export", fake_main_export)
    model = remote_model[0] if flag else tiny_model("bert")
    argv = ["export", str(model), "--out", str(tmp_path / "o")] + (["--trust-remote-code"] if flag else [])
    assert main(argv) == 2  # the fake exporter's ValueError becomes an ExportError
    assert seen == [flag]
    with pytest.raises(ExportError):
        from toolchain.export.core import export

        export(model, tmp_path / "o", trust_remote_code=flag)


def test_reference_runs_remote_code_only_when_trusted(remote_model):
    from toolchain.export.parity import Reference

    model, marker = remote_model
    from toolchain.runtime import ToolchainError

    with pytest.raises(ToolchainError, match="pass --trust-remote-code if you trust its authors"):
        Reference(model, "feature-extraction")  # validate / parity: refused in one sentence, nothing ran
    assert not marker.exists()
    ref = Reference(model, "feature-extraction", trust_remote_code=True)  # security test: on purpose
    assert type(ref.model).__name__ == "TinyModel"  # the model's own class: its code ran (once per process)


def test_auto_map_for_a_builtin_model_type_needs_no_flag(tiny_model, tmp_path):
    from toolchain.export.source import resolve

    model = tmp_path / "m"
    shutil.copytree(tiny_model("bert"), model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_x.X"}  # transformers uses its own BERT code for "bert"
    (model / "config.json").write_text(json.dumps(config))
    assert resolve(model).remote_code is False


def _recipe(folder: Path, source: str) -> "object":
    path = folder / "r.toml"
    path.write_text(f'task = "text-classification"\nlabels = ["a", "b"]\n[source]\n{source}\n'
                    '[data.train]\npath = "train.tsv"\nlabel = "label"\n[train]\nepochs = 1.0\n')
    return load_recipe(path)


def test_recipe_key_trust_remote_code(remote_model, tmp_path):
    from toolchain.train.stages import pretrained_dir as _pretrained_dir

    model, marker = remote_model
    with pytest.raises(SourceError, match="trust_remote_code = true under \\[source\\]"):
        _pretrained_dir(_recipe(tmp_path, f'pretrained = "{model}"'))
    trusted = _recipe(tmp_path, f'pretrained = "{model}"\ntrust_remote_code = true')
    assert trusted.source.trust_remote_code is True and _pretrained_dir(trusted) == model.resolve()
    assert _recipe(tmp_path, 'pretrained = "x"').source.trust_remote_code is False
    with pytest.raises(RecipeError, match="trust_remote_code must be true or false"):
        _recipe(tmp_path, 'pretrained = "x"\ntrust_remote_code = "yes"')
    assert not marker.exists()


# -- (c) the demo -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("0.0.0.0", True), ("192.168.1.20", True)])
def test_demo_launch_settings_and_a_warning_for_other_hosts(classifier_artifact, monkeypatch, host, warned):
    pytest.importorskip("gradio")
    import gradio as gr

    import toolchain.serve.app as demo_mod

    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw))
    messages: list[str] = []
    demo_mod.demo([classifier_artifact], host=host, block=False, progress=messages.append)
    assert launched["server_name"] == host
    assert launched["share"] is False and launched["show_error"] is False
    assert launched["max_file_size"] == demo_mod.MAX_FILE_SIZE and launched["mcp_server"] is False
    assert launched["allowed_paths"] == []  # no bench chart in this artifact: nothing else is served
    warnings = [m for m in messages if "reachable from other machines" in m]
    assert bool(warnings) == warned
    assert demo_mod.HOST == "127.0.0.1"


@pytest.fixture(scope="module")
def demo_server(classifier_artifact, tiny_artifact):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from toolchain.serve.app import demo

    app = demo([classifier_artifact, tiny_artifact("bert")], port=_free_port(), block=False, progress=lambda m: None)
    try:
        yield app, gradio_client.Client(app.local_url, verbose=False)
    finally:
        app.close()


LEAKS = ("Traceback", 'File "', ".py", "site-packages", "RuntimeError", "secret")


def test_demo_hides_an_unexpected_exception(demo_server, monkeypatch):
    from toolchain.runtime import Classifier

    def boom(self, texts):
        raise RuntimeError(f"secret detail from {Path(__file__)} line 1")

    monkeypatch.setattr(Classifier, "scores", boom)
    app, client = demo_server
    label, message = client.predict("fine", api_name="/classify")
    assert message.startswith("⚠️") and "went wrong on the server" in message
    assert not any(leak in message for leak in LEAKS), message
    assert label is None or not label.get("label")


def test_demo_raw_api_errors_leak_nothing(demo_server):
    import httpx

    app, _ = demo_server
    url = app.local_url.rstrip("/")
    bodies = []
    for payload in ({"data": "not a list"}, {"nope": 1}, {"data": [None, None, None, None, None]},
                    {"data": ["fine", "auto", "/etc"]}, {"data": [["a"], {"x": 1}, 5]}):  # the last two fail in Gradio
        r = httpx.post(f"{url}/gradio_api/call/classify", json=payload, timeout=30)
        bodies.append(r.text)
        if r.status_code == 200 and "event_id" in r.text:
            event = r.json()["event_id"]
            bodies.append(httpx.get(f"{url}/gradio_api/call/classify/{event}", timeout=30).text)
    assert sum("event: error" in b for b in bodies) >= 2  # failures outside our handlers were exercised
    r = httpx.post(f"{url}/gradio_api/run/classify", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    bodies.append(r.text)
    for body in bodies:
        assert "Traceback" not in body and 'File "' not in body and "site-packages" not in body, body


def test_demo_rejects_an_upload_over_the_limit(demo_server):
    import httpx

    import toolchain.serve.app as demo_mod

    app, _ = demo_server
    limit = int(demo_mod.MAX_FILE_SIZE.removesuffix("mb")) * 1024 * 1024
    r = httpx.post(f"{app.local_url.rstrip('/')}/gradio_api/upload",
                   files={"files": ("big.bin", b"\0" * (limit + 1024))}, timeout=60)
    assert r.status_code == 413 and "Traceback" not in r.text


def test_demo_limits_input_length(demo_server):
    import toolchain.serve.app as demo_mod

    _, client = demo_server
    too_many = "\n".join(f"sentence {i}" for i in range(demo_mod.MAX_SENTENCES + 1))
    table, message = client.predict("query", too_many, api_name="/search")
    assert message.startswith("⚠️") and f"at most {demo_mod.MAX_SENTENCES}" in message
    *_, message = client.predict("x" * (demo_mod.MAX_CHARS + 1), "fp32", "auto", api_name="/compare")
    assert message.startswith("⚠️") and f"at most {demo_mod.MAX_CHARS:,}" in message


# -- (d) recipe paths stay in the recipe's folder ------------------------------------------------------
@pytest.fixture
def recipe_in(tmp_path):
    folder = tmp_path / "recipes"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.tsv").write_text("sentence\tlabel\nx\t0\n")
    (tmp_path / "outside.tsv").write_text("sentence\tlabel\nsecret\t0\n")
    return _recipe(folder, 'pretrained = "x"')


@pytest.mark.parametrize("given", ["../outside.tsv", "data/../../outside.tsv", "./../outside.tsv", "..", "."])
def test_recipe_paths_may_not_climb_out(recipe_in, given):
    with pytest.raises(RecipeError, match="escapes the recipe's folder; give an absolute path"):
        recipe_in.resolve(given)


def test_recipe_symlinks_pointing_outside_are_refused(recipe_in, tmp_path):
    folder = recipe_in.folder
    (folder / "data" / "link.tsv").symlink_to(tmp_path / "outside.tsv")
    (folder / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    for given in ("data/link.tsv", "elsewhere/outside.tsv"):
        with pytest.raises(RecipeError, match="escapes the recipe's folder"):
            recipe_in.resolve(given)
    (folder / "data" / "inner.tsv").symlink_to(folder / "data" / "train.tsv")
    assert recipe_in.resolve("data/inner.tsv") == (folder / "data" / "train.tsv").resolve()


def test_recipe_paths_inside_and_absolute_ones_are_allowed(recipe_in, tmp_path, monkeypatch):
    assert recipe_in.resolve("data/train.tsv") == (recipe_in.folder / "data" / "train.tsv").resolve()
    assert recipe_in.resolve(str(tmp_path / "outside.tsv")) == tmp_path / "outside.tsv"  # on purpose
    monkeypatch.setenv("HOME", str(tmp_path))
    assert recipe_in.resolve("~/outside.tsv") == tmp_path / "outside.tsv"  # ~ is absolute, too


def test_a_recipe_whose_data_climbs_out_fails_in_train(recipe_in, tmp_path, tiny_model):
    from toolchain.train.trainer import train

    text = recipe_in.path.read_text().replace('pretrained = "x"', f'pretrained = "{tiny_model("bert", "text-classification")}"')
    recipe_in.path.write_text(text.replace('path = "train.tsv"', 'path = "../outside.tsv"'))
    with pytest.raises(RecipeError, match="escapes the recipe's folder"):
        train(recipe_in.path, out=tmp_path / "model", smoke=True)
    assert not (tmp_path / "model").exists()
