"""Resume is checked by what it restores: a run interrupted after its step-2 checkpoint continues from
step 2 with the checkpoint's optimizer and scheduler state, not from scratch with a "resuming" message."""

from __future__ import annotations

import shutil

import pytest
import transformers

from conftest import classifier_recipe

from toolchain.train import train
from toolchain.train.recipe import load_recipe


class _Recorder(transformers.TrainerCallback):
    """Notes what the trainer holds when training begins, and interrupts at a given step (as Ctrl-C)."""

    def __init__(self, log: dict, interrupt_at: int | None):
        self.log, self.interrupt_at = log, interrupt_at

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        self.log["begin_step"] = state.global_step
        self.log["optimizer_state"] = {k: {n: t.clone() for n, t in v.items() if hasattr(t, "clone")}
                                       for k, v in optimizer.state_dict()["state"].items()}
        self.log["scheduler_last_epoch"] = lr_scheduler.last_epoch
        self.log["lr"] = lr_scheduler.get_last_lr()

    def on_step_begin(self, args, state, control, **kwargs):
        self.log.setdefault("steps_run_from", state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.log["end_step"] = state.global_step
        if self.interrupt_at is not None and state.global_step == self.interrupt_at:
            raise KeyboardInterrupt


@pytest.fixture
def recorded(monkeypatch):
    """Wrap transformers.Trainer.train (whatever toolchain module calls it): record its resume argument
    and add the recorder callback. Returns (runs, set_interrupt)."""
    runs: list[dict] = []
    interrupt = {"at": None}
    real = transformers.Trainer.train

    def train_wrapper(self, resume_from_checkpoint=None, *args, **kwargs):
        log = {"resume_from_checkpoint": resume_from_checkpoint}
        runs.append(log)
        self.add_callback(_Recorder(log, interrupt["at"]))
        return real(self, resume_from_checkpoint, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", train_wrapper)
    return runs, interrupt


@pytest.fixture
def recipe(tiny_model, tmp_path):
    (tmp_path / "train.tsv").write_text("label\tsentence\n" + "".join(f"{i % 2}\tsentence number {i}\n" for i in range(40)))
    path = tmp_path / "r.toml"
    path.write_text(classifier_recipe(tiny_model("bert", "text-classification"), "train.tsv"))
    r = load_recipe(path)
    r.train.max_steps, r.train.save_steps, r.train.batch_size, r.train.logging_steps = 4, 2, 4, 1
    r.train.learning_rate = 1e-3  # big enough that the optimizer state is far from zero
    return r


def test_resume_restores_step_optimizer_and_scheduler(recipe, tmp_path, recorded):
    import torch

    runs, interrupt = recorded
    interrupt["at"] = 3  # after the step-2 checkpoint was written
    with pytest.raises(KeyboardInterrupt):
        train(recipe, out=tmp_path / "out")
    ckpt = tmp_path / "out.checkpoints" / "checkpoint-2"
    assert ckpt.is_dir() and not (tmp_path / "out").exists()
    kept = tmp_path / "kept"  # the checkpoint is removed once the model is written: keep what we compare with
    shutil.copytree(ckpt, kept)
    saved_opt = torch.load(kept / "optimizer.pt", weights_only=True)["state"]
    saved_sched = torch.load(kept / "scheduler.pt", weights_only=True)
    assert saved_opt, "the checkpoint holds no optimizer state"

    interrupt["at"] = None
    said: list[str] = []
    result = train(recipe, out=tmp_path / "out", progress=said.append)
    first, second = runs
    assert first["begin_step"] == 0 and first["optimizer_state"] == {}  # a fresh run starts from nothing
    assert second["resume_from_checkpoint"] is not None and str(second["resume_from_checkpoint"]).endswith("checkpoint-2")
    assert second["begin_step"] == 2 and second["steps_run_from"] == 2  # steps 3 and 4 only
    assert second["end_step"] == 4 and result.metrics["finetune"]["step"] == 4
    assert second["scheduler_last_epoch"] == saved_sched["last_epoch"] == 2
    restored = second["optimizer_state"]
    assert restored.keys() == saved_opt.keys()
    for key, state in saved_opt.items():
        for name, tensor in state.items():
            if hasattr(tensor, "shape") and tensor.numel() > 1:
                assert torch.equal(restored[key][name], tensor), (key, name)
    assert any(t.abs().sum() > 0 for s in restored.values() for t in s.values() if hasattr(t, "abs"))
    assert any("resuming from the last checkpoint" in s for s in said)
    assert not (tmp_path / "out.checkpoints").exists()


def test_a_fresh_run_does_not_resume(recipe, tmp_path, recorded):
    runs, _ = recorded
    train(recipe, out=tmp_path / "out")
    (run,) = runs
    assert run["resume_from_checkpoint"] is None and run["begin_step"] == 0 and run["end_step"] == 4
