"""`toolchain train RECIPE --nproc 2` on a [model] module recipe: the module loop's own DDP (module_ddp.py) learns
what 1 process learns with the same global batch, rank 0 alone writes, and a run whose process died after a
checkpoint resumes from it and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from toolchain.train.distributed import Launch, launch  # noqa: E402
from toolchain.runtime.errors import ToolchainError  # noqa: E402

GOOD, BAD = ["great", "good", "fine", "nice", "lovely"], ["bad", "poor", "dull", "awful", "weak"]
NOUNS = ["film", "plot", "book", "song", "cast", "score"]
STEPS = 6
# Both recipes' [train]: small batches of a global 8, a loss logged every step, a checkpoint every 2 steps.
TRAIN = """[train]
max_steps = {steps}
batch_size = 8
max_length = 16
learning_rate = 0.01
warmup_ratio = 0.0
logging_steps = 1
save_steps = 2
"""

# A GRU classifier whose training forward raises on process RANK (env FAIL_RANK) at call FAIL_AT: a process
# dying mid-run (torchrun then stops the others) at a known step, with no race against the clock.
FAULTY = '''
import os
from toolchain.train.modules.gru import build as gru_build


def build(config):
    module, spec = gru_build(config)
    calls = [0]
    forward = module.forward

    def maybe_fail(ids, mask):
        if module.training and os.environ.get("FAIL_RANK") == os.environ.get("RANK", "0"):
            calls[0] += 1
            if calls[0] == int(os.environ["FAIL_AT"]):
                raise RuntimeError("injected failure")
        return forward(ids, mask)

    module.forward = maybe_fail
    return module, spec
'''


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny GRU recipe with dropout off (1 and 2 processes draw no different masks) on 60 texts of 2 to 7 words."""
    root = tmp_path_factory.mktemp("ddpmod")
    lines = []
    for i in range(60):
        words = [(GOOD if i % 2 else BAD)[i % 5]] + [NOUNS[(i * 7 + k) % 6] for k in range(1 + i % 6)]
        lines.append(f"{i % 2}\t{' '.join(words)}")
    (root / "train.tsv").write_text("label\tsentence\n" + "\n".join(lines) + "\n")
    (root / "faulty.py").write_text(FAULTY)
    path = root / "gru.toml"
    path.write_text(textwrap.dedent("""\
        name = "gru-ddp"
        task = "text-classification"
        labels = ["negative", "positive"]
        [model]
        module = "faulty:build"
        [model.config]
        vocab_size = 200
        embed = 16
        hidden = 16
        dropout = 0.0
        [data.train]
        path = "train.tsv"
        text = "sentence"
        label = "label"
        """) + TRAIN.format(steps=STEPS))
    return path


def curve(out: Path) -> list[float]:
    return [row["loss"] for row in json.loads((out / "training.json").read_text())["losses"]]


@pytest.fixture(scope="module")
def one_process(recipe, tmp_path_factory) -> Path:
    from toolchain.train import train

    out = tmp_path_factory.mktemp("one") / "model"
    train(recipe, out=out)
    return out


def same_tokenizer(model: Path, out: Path) -> None:
    """Start OUT with MODEL's tokenizer, as a rerun keeps the one its first attempt made: WordPiece training breaks
    ties in hash order, so two runs' tokenizers may number the same tokens differently."""
    ckpt = out.with_name(out.name + ".checkpoints")
    ckpt.mkdir(parents=True)
    (ckpt / "tokenizer.json").write_text((model / "tokenizer.json").read_text())


def test_two_processes_learn_what_one_does(recipe, one_process, tmp_path):
    same_tokenizer(one_process, tmp_path / "two")
    two = launch(recipe, Launch(nproc=2), out=tmp_path / "two")
    assert two.metrics["finetune"]["world_size"] == 2
    a, b = curve(one_process), curve(tmp_path / "two")
    assert len(a) == len(b) == STEPS and len(set(a)) == STEPS  # a curve that moves, so agreeing is not trivial
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    from safetensors.numpy import load_file

    w1, w2 = load_file(one_process / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys() and max(abs(w1[k] - w2[k]).max() for k in w1) < 1e-4  # the same weights learned
    assert (one_process / "tokenizer.json").read_text() == (tmp_path / "two" / "tokenizer.json").read_text()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in one_process.iterdir())
    assert not (tmp_path / "two.checkpoints").exists()  # rank 0 dropped them once the model was written


def test_a_ddp_run_that_died_resumes_from_its_checkpoint(recipe, one_process, tmp_path, monkeypatch, capfd):
    out = tmp_path / "out"
    same_tokenizer(one_process, out)
    monkeypatch.setenv("FAIL_RANK", "1")
    monkeypatch.setenv("FAIL_AT", "5")  # rank 1 dies in step 5, after checkpoint-4
    with pytest.raises(ToolchainError, match="resumes from the last checkpoint"):
        launch(recipe, Launch(nproc=2), out=out)
    ckpt = tmp_path / "out.checkpoints"
    assert not out.exists() and sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-4"]
    state = json.loads((ckpt / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["logged"]) == 4
    monkeypatch.delenv("FAIL_RANK")
    capfd.readouterr()
    launch(recipe, Launch(nproc=2), out=out)
    log = capfd.readouterr().err
    assert "resuming from the last checkpoint" in log and "(checkpoint-4)" in log
    assert "step 5/6" in log and "step 4/6" not in log  # only the steps after the checkpoint ran again
    a, b = curve(one_process), curve(out)
    assert len(b) == STEPS and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)  # the same run, resumed
    assert not ckpt.exists()


SEQ2SEQ = """\
name = "lstm-ddp"
task = "text2text-generation"
[model]
module = "toolchain.train.modules.seq2seq_lstm:build"
[model.config]
vocab_size = 120
embed = 16
hidden = 16
dropout = 0.0
[data.train]
path = "pairs.tsv"
text = "source"
target = "target"
""" + TRAIN.format(steps=4)


def test_an_encoder_decoder_module_learns_with_two_processes_what_one_does(tmp_path, monkeypatch):
    """The translators' stage (seq2seq_stage.py) shares the module loop's DDP and checkpoints: the same curve and
    weights as one process with the same global batch, a checkpoint every save_steps, rank 0 alone writes."""
    from safetensors.numpy import load_file

    from toolchain.train import module_stage, train

    saved: list[int] = []
    real_save = module_stage.save_checkpoint
    monkeypatch.setattr(module_stage, "save_checkpoint",
                        lambda ckpt, step, *rest: (saved.append(step), real_save(ckpt, step, *rest)))

    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rows = [f"{digits[i % 10]} {digits[(i * 3) % 10]}\t{i % 10}{(i * 3) % 10}" for i in range(40)]
    (tmp_path / "pairs.tsv").write_text("source\ttarget\n" + "\n".join(rows) + "\n")
    recipe = tmp_path / "lstm.toml"
    recipe.write_text(SEQ2SEQ)
    one = tmp_path / "one"
    train(recipe, out=one)
    assert saved == [2]  # save_steps 2 of 4 steps: the last step writes the model, not a checkpoint
    same_tokenizer(one, tmp_path / "two")
    two = launch(recipe, Launch(nproc=2), out=tmp_path / "two")
    assert two.metrics["finetune"]["world_size"] == 2
    a, b = curve(one), curve(tmp_path / "two")
    assert len(a) == len(b) == 4 and len(set(a)) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    w1, w2 = load_file(one / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys() and max(abs(w1[k] - w2[k]).max() for k in w1) < 1e-4
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in one.iterdir())
    assert not (tmp_path / "two.checkpoints").exists() and not (tmp_path / "one.checkpoints").exists()
