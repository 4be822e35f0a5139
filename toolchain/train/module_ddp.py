"""DDP and checkpoints for the plain PyTorch loop of [model] module recipes (module_stage.fit_module).

Under torchrun (train/distributed.py) every process runs the same loop over the same global batches (one
seeded shuffle), and takes its share of each: items rank, rank + N, ... of the batch. Its loss is weighted
by its share of the batch, so DistributedDataParallel's gradient average is exactly the 1-process gradient
of the whole batch, for any batch size (a process whose share is empty runs one item with weight 0, so
every process still takes part in the all-reduce). The process group is gloo: the loop runs on the CPU.

Checkpoints (every save_steps steps, beside the output as the Hugging Face stages keep theirs) hold the
weights, the AdamW moments and the torch RNG in safetensors, and the step, logged losses, optimizer groups
and schedule in trainer_state.json (written last, in one atomic directory step, by global rank 0 only);
the batch order is replayed from the seed, so a resumed run takes the batches the killed one would have.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolchain.artifact import atomic_dir
from toolchain.train.fit import last_complete_checkpoint

STATE = "trainer_state.json"  # written last: fit.last_complete_checkpoint resumes only from checkpoints that have it
WEIGHTS, OPTIMIZER, TOKENIZER = "model.safetensors", "optimizer.safetensors", "tokenizer.json"


@dataclass(frozen=True)
class Group:
    """This process's place among the WORLD processes torchrun started (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Group":
        """RANK and WORLD_SIZE as torchrun sets them; joins the gloo process group once when WORLD_SIZE > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def wrap(self, module):
        """MODULE as DistributedDataParallel (rank 0's initial weights broadcast to all), or as it is alone."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def shard(self, batch: list) -> tuple[list, float]:
        """This process's items of BATCH and the weight of its mean loss (its share of the batch, times WORLD)."""
        mine = batch[self.rank :: self.world]
        if not mine:  # fewer items than processes: take part in the all-reduce with a zero-weight item
            return batch[:1], 0.0
        return mine, len(mine) * self.world / len(batch)

    def mean(self, value):
        """The mean over processes of a weighted loss (a 0-d tensor): the batch's loss as 1 process sees it."""
        if self.world == 1:
            return float(value.detach())
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def shared_tokenizer(group: Group, ckpt: Path, resume: Path | None, make: Callable[[], Any]):
    """The tokenizer every process encodes with: the resumed checkpoint's; else the one an earlier attempt at
    this output left in CKPT; else made by rank 0 and kept there for the others to read. The WordPiece
    trainer breaks ties in hash order, so two processes (or two runs) training their own would differ."""
    from tokenizers import Tokenizer

    if resume is not None:
        return Tokenizer.from_file(str(resume / TOKENIZER))
    shared = ckpt / TOKENIZER
    tok = None
    if group.rank == 0:
        if shared.is_file():
            tok = Tokenizer.from_file(str(shared))
        else:
            tok = make()
            ckpt.mkdir(parents=True, exist_ok=True)
            tmp = shared.with_name(f".{TOKENIZER}.tmp-{os.getpid()}")
            tok.save(str(tmp))
            os.replace(tmp, shared)
    group.barrier()
    return tok if tok is not None else Tokenizer.from_file(str(shared))


def save_checkpoint(ckpt: Path, step: int, module, optimizer, schedule, tok, loop: dict[str, Any]) -> None:
    """Write CKPT/checkpoint-STEP in one step (global rank 0 only), then drop the older checkpoints."""
    import torch
    from safetensors.torch import save_file

    if int(os.environ.get("RANK", "0")) != 0:
        return
    opt = optimizer.state_dict()
    moments = {f"{index}.{key}": value.detach().contiguous().cpu()
               for index, state in opt["state"].items() for key, value in state.items() if torch.is_tensor(value)}
    moments["rng.torch"] = torch.get_rng_state()
    out = ckpt / f"checkpoint-{step}"
    with atomic_dir(out, marker=STATE) as tmp:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp / WEIGHTS))
        save_file(moments, str(tmp / OPTIMIZER))
        if tok is not None:
            tok.save(str(tmp / TOKENIZER))
        state = {**loop, "step": step, "param_groups": opt["param_groups"], "schedule": schedule.state_dict()}
        (tmp / STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    for old in ckpt.glob("checkpoint-*"):
        if old.name != out.name:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, module, optimizer, schedule) -> dict[str, Any]:
    """Restore weights, optimizer, schedule and torch RNG from the checkpoint PATH; its loop state (step, ...)."""
    import torch
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path / WEIGHTS)))
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    moments = load_file(str(path / OPTIMIZER))
    torch.set_rng_state(moments.pop("rng.torch"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    schedule.load_state_dict(state["schedule"])
    return state


def resumable(ckpt: Path | None) -> Path | None:
    """The newest complete checkpoint of the loop in CKPT (a run killed while saving left none there)."""
    return last_complete_checkpoint(ckpt) if ckpt is not None and ckpt.is_dir() else None
