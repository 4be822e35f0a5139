"""The bench's PyTorch pipeline pools as the runtime does (bench/encoder.py _torch_head vs runtime/encoders.py pool),
for every pooling mode and either padding side, so sentences/s compare the same work."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.runtime.encoders import POOLS, pool


@pytest.mark.parametrize("mode", sorted(POOLS))
@pytest.mark.parametrize("mask", [[[0, 1, 1, 1], [1, 1, 0, 0]], [[1, 1, 1, 0], [1, 1, 1, 1]]], ids=["mixed", "right"])
def test_torch_head_pools_like_the_runtime(mode, mask):
    import torch

    from toolchain.bench.encoder import _torch_head

    hidden = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.asarray(mask)
    ours = _torch_head(torch.from_numpy(hidden), torch.from_numpy(mask), {"mode": mode, "normalize": False})
    assert np.allclose(ours.numpy(), pool(hidden, mask, mode), atol=1e-6)
