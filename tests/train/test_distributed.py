"""`toolchain train RECIPE --nproc 2`: torchrun runs the recipe as 2 DDP processes (gloo on CPU) that learn
what 1 process learns with the same global batch, and a run killed after a checkpoint resumes from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_tiny, classifier_recipe

from toolchain.cli import main
from toolchain.train.distributed import Launch, launch, torchrun_command
from toolchain.runtime.errors import ToolchainError

GOOD, BAD, NOUNS = ["great", "good", "fine", "nice"], ["bad", "poor", "dull", "awful"], ["film", "plot", "book", "song"]
STEPS = 6


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny BERT classifier with dropout off (so 1 and 2 processes draw no different random masks) on 48 texts
    of equal length (so grouping by length orders the examples the same for any per-process batch)."""
    root = tmp_path_factory.mktemp("ddp")
    model = build_tiny("bert", "text-classification", root / "model")
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    lines = [f"{i % 2}\t{(GOOD if i % 2 else BAD)[i % 4]} {NOUNS[(i // 4) % 4]} {NOUNS[(i // 16) % 3]}" for i in range(48)]
    (root / "train.tsv").write_text("label\tsentence\n" + "\n".join(lines) + "\n")
    path = root / "r.toml"
    path.write_text(classifier_recipe(model, "train.tsv", max_steps=STEPS, batch_size=8, learning_rate=1e-3,
                                      logging_steps=1, save_steps=2, warmup_ratio=0.0))
    return path


def curve(out: Path) -> list[float]:
    return json.loads((out / "training.json").read_text())["loss_curve"]


def test_two_processes_learn_what_one_does(recipe, tmp_path):
    from toolchain.train import train

    one = train(recipe, out=tmp_path / "one")
    two = launch(recipe, Launch(nproc=2), out=tmp_path / "two")
    assert two.metrics["finetune"]["world_size"] == 2 and one.metrics["finetune"]["world_size"] == 1
    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert len(a) == len(b) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) < 2e-3, (a, b)
    assert len(set(a)) == STEPS  # a curve that moves each step, so agreeing is not trivial
    from safetensors.numpy import load_file

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys() and max(abs(w1[k] - w2[k]).max() for k in w1) < 1e-4  # the same weights learned
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert not (tmp_path / "two.checkpoints").exists()


@pytest.mark.slow
def test_killed_ddp_run_resumes_from_its_checkpoint(recipe, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(torchrun_command(recipe, Launch(nproc=2), out, smoke=False), env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out.with_name("out.checkpoints") / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # every process of the run, as a lost node would
    proc.wait()
    assert state.is_file() and not (out / "training.json").exists()
    launch(recipe, Launch(nproc=2), out=out)
    done = json.loads((out / "training.json").read_text())
    assert len(done["loss_curve"]) == STEPS and done["world_size"] == 2
    assert done["global_step" if "global_step" in done else "step"] == STEPS


def test_refusals_before_any_process_starts(recipe, tmp_path, capsys):
    with pytest.raises(ToolchainError, match="--rdzv-endpoint"):
        Launch(nproc=2, nnodes=2)
    with pytest.raises(ToolchainError, match="does not split"):
        launch(recipe, Launch(nproc=3), out=tmp_path / "x")
    assert main(["train", str(recipe), "--nproc", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    cmd = torchrun_command(recipe, Launch(2, 2, "node0:29500"), tmp_path / "m", smoke=True)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--rdzv-endpoint=node0:29500" in cmd
    assert cmd[-1] == "--smoke" and "--nnodes=2" in cmd
