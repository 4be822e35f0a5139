"""A rotating sample of optimum's own list of text architectures (optimum_sweep.py): each pair built tiny from its
config, exported with `toolchain export`, validated and served. The sample is drawn from the test run's random seed
(pytest-randomly's), else today's date; a failure names the seed, and

    TOOLCHAIN_COVERAGE_SEED=<seed> pytest tests/export/test_coverage.py

replays that sample (or: python tests/export/optimum_sweep.py --sample 10 --seed <seed>). The full sweep is the script.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SLOTS = 10


def _seed(config) -> int:
    given = os.environ.get("TOOLCHAIN_COVERAGE_SEED")
    if given:
        return int(given)
    seed = getattr(config.option, "randomly_seed", None)
    return seed if isinstance(seed, int) else int(time.strftime("%Y%m%d"))


@pytest.fixture(scope="session")
def coverage_sample(request) -> tuple[int, list[tuple[str, str]]]:
    import optimum_sweep as sweep

    seed = _seed(request.config)
    pairs = sweep.sample(sweep.text_pairs(), seed, SLOTS)
    print(f"\ncoverage sample, seed {seed}: {pairs}")
    return seed, pairs


@pytest.mark.parametrize("slot", range(SLOTS))
def test_sampled_architecture_exports_validates_and_serves(slot, coverage_sample, tmp_path):
    import optimum_sweep as sweep

    seed, pairs = coverage_sample
    model_type, task = pairs[slot]
    outcome = sweep.check_pair(model_type, task, tmp_path)
    replay = f"replay with TOOLCHAIN_COVERAGE_SEED={seed}"
    if outcome.status == "optimum-failed":
        pytest.xfail(f"optimum itself cannot export {model_type} for {task} ({outcome.error}); {replay}")
    from toolchain.export.families import UNSUPPORTED

    if model_type in UNSUPPORTED:  # refused on purpose: one sentence naming the architecture, at export
        assert outcome.status == "failed" and outcome.stage == "export", replay
        assert f"{model_type} models cannot be exported" in outcome.error and "\n" not in outcome.error, replay
        return
    assert outcome.status == "passed", f"{model_type}/{task} failed at {outcome.stage}: {outcome.error} ({replay})"
    if task == "feature-extraction":
        assert outcome.cosine >= sweep.MIN_COSINE


def test_the_list_is_optimums_text_only_pairs():
    """The universe is optimum's registry filtered to text-only graphs, not a hand-picked list."""
    import optimum_sweep as sweep

    pairs = sweep.text_pairs()
    types = {t for t, _ in pairs}
    assert {("llama", "feature-extraction"), ("bloom", "text-generation"), ("roberta", "text-classification"),
            ("deepseek_v3", "text-generation")} <= set(pairs)
    assert not types & {"layoutlm", "markuplm", "whisper", "vit", "t5", "bart", "imagegpt", "gemma3"}
    assert len(pairs) >= 130
    assert sweep.sample(pairs, 7) == sweep.sample(pairs, 7) != sweep.sample(pairs, 8)
