"""`toolchain train RECIPE --nproc N`: the same recipe as N processes per node with torchrun (DDP).

Why torchrun and nothing of our own: ``torch.distributed.run`` starts the processes, sets RANK /
WORLD_SIZE / MASTER_ADDR in each, runs the rendezvous between nodes and tears everything down when one
process fails; transformers' Trainer sees those variables and wraps the model in DistributedDataParallel
(gloo on CPU, NCCL on GPU), shards each global batch over the processes and saves checkpoints from rank 0.
What this module adds is small: the launch command, the worker entry (``python -m
toolchain.train.distributed``), and two rules kept in fit.py: the recipe's batch_size stays the global
batch (each process takes batch_size / WORLD_SIZE), and only global rank 0 writes the model dir.
[model] module recipes (text classifiers, encoder-decoder translators) train in their own loop, which does the
same with DDP itself (module_ddp.py: a share of each global batch per process, gloo, rank 0 writes checkpoints).
Multi-node: run the same command on every node with --nnodes M and one --rdzv-endpoint; --out and its
checkpoints must be on storage every node sees for resume to find them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toolchain.runtime.errors import ToolchainError
from toolchain.train.recipe import RecipeError, load_recipe
from toolchain.train.smoke import SMOKE
from toolchain.train.trainer import TrainResult, default_out, train

__all__ = ["Launch", "launch", "torchrun_command"]


@dataclass(frozen=True)
class Launch:
    """How many processes: NPROC per node on NNODES nodes, meeting at RDZV_ENDPOINT (HOST:PORT) when NNODES > 1."""

    nproc: int
    nnodes: int = 1
    rdzv_endpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("nproc", "nnodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ToolchainError(f"--{name} must be a whole number of at least 1, got {value!r}.")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ToolchainError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT, the address every node "
                                 "meets at (e.g. the first node's name and port 29500).")
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            raise ToolchainError(f"--rdzv-endpoint {self.rdzv_endpoint!r} is not HOST:PORT; give e.g. node0:29500.")

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def torchrun_command(recipe: Path, spec: Launch, out: Path, smoke: bool) -> list[str]:
    """``python -m torch.distributed.run ... -m toolchain.train.distributed RECIPE --out OUT``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={spec.nproc}", f"--nnodes={spec.nnodes}"]
    if spec.rdzv_endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={spec.rdzv_endpoint}", f"--rdzv-id=toolchain-{out.name}"]
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "toolchain.train.distributed", str(recipe), "--out", str(out)]
    return cmd + (["--smoke"] if smoke else [])


def _check_recipe(recipe_path: Path, spec: Launch, smoke: bool) -> None:
    """Refuse before any process starts: a global batch that does not split over the processes."""
    recipe = load_recipe(recipe_path)
    for what, training in (("[train]", recipe.train), ("[pretrain]", getattr(recipe.pretrain, "train", None))):
        if training is None:
            continue
        batch = SMOKE["batch"] if smoke else training.batch_size
        if batch % spec.world_size:
            raise RecipeError(f"{recipe_path}: {what} batch_size {batch} (the global batch) does not split over "
                              f"{spec.world_size} processes; make it a multiple of {spec.world_size}.")


def launch(recipe: str | Path, spec: Launch, out: str | Path | None = None, smoke: bool = False,
           progress: Callable[[str], None] = lambda m: None) -> TrainResult:
    """Train RECIPE as SPEC.nproc processes on this node (one node's share when SPEC.nnodes > 1)."""
    recipe_path = Path(recipe)
    _check_recipe(recipe_path, spec, smoke)
    out_path = Path(out) if out else default_out(load_recipe(recipe_path))
    env = dict(os.environ)
    # torchrun pins each process to 1 thread unless told; share this node's cores between the processes.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.nproc)))
    progress(f"torchrun: {spec.nproc} process(es) on each of {spec.nnodes} node(s), world size {spec.world_size}")
    code = subprocess.run(torchrun_command(recipe_path, spec, out_path, smoke), env=env).returncode
    if code != 0:
        raise ToolchainError(f"torchrun exited with status {code}; the failing process's error is above "
                             "(re-running the same command resumes from the last checkpoint).")
    metrics_file = out_path / "training.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}  # rank 0's node has it
    return TrainResult(out_path, {"finetune": metrics})


def worker(argv: list[str] | None = None) -> int:
    """One torchrun process: the ordinary train(); the Trainer finds RANK and WORLD_SIZE in the environment."""
    parser = argparse.ArgumentParser(prog="toolchain.train.distributed")
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))

    def say(msg: str) -> None:
        if rank == 0:
            print(f"[toolchain] {msg}", file=sys.stderr, flush=True)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        train(args.recipe, out=args.out, smoke=args.smoke, progress=say)
    except ToolchainError as exc:
        print(f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2
    _leave_group()
    return 0


def _leave_group() -> None:
    """Wait until every process is done (rank 0 writes the model after the others finish training), then
    leave the process group together: a gloo process leaving while its peer still held the connection
    aborted now and then ("terminate called without an active exception", seen 1 run in 5 here)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(worker())
