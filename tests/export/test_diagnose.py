"""A parity miss names the wrong side (export/diagnose.py): the graph, the float32 reference, or the model's own
numerics; and an input the runtime has no rule for is refused at export, naming it (export/feeds.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


class Linear:
    """A reference whose model is one linear map over a float input (what which_is_wrong needs of Reference)."""

    def __init__(self, pinned_float32: bool = False):
        import torch

        self.torch = torch
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 3)
        self.model = _Pinned(layer) if pinned_float32 else _Wrap(layer)

    def outputs(self, feeds, output):
        with self.torch.inference_mode():
            out = self.model(**{k: self.torch.from_numpy(v) for k, v in feeds.items()})
            return getattr(out, output).float().numpy()


class _Wrap:
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return SimpleNamespace(out=self.layer(x.to(self.layer.weight.dtype)))

    def double(self):
        self.layer.double()

    def float(self):
        self.layer.float()

    def parameters(self):
        return self.layer.parameters()


class _Pinned(_Wrap):
    """Feeds its float32 input as it is (as DeepSeek-V3's router computes in float32): no float64 run."""

    def __call__(self, x):
        return SimpleNamespace(out=self.layer(x))


FEEDS = {"x": np.ones((2, 4), dtype=np.float32)}


def test_a_graph_far_from_a_sound_reference_is_named_wrong():
    from toolchain.export.diagnose import which_is_wrong

    ref = Linear()
    right = ref.outputs(FEEDS, "out")
    assert which_is_wrong(ref, [(FEEDS, right + 0.05, None)], "out", 1e-3).startswith("the graph is wrong")
    assert which_is_wrong(ref, [(FEEDS, right, None)], "out", 1e-3).startswith("both sides agree")


def test_a_model_pinned_to_float32_is_probed_with_weight_noise():
    from toolchain.export.diagnose import which_is_wrong

    ref = Linear(pinned_float32=True)
    said = which_is_wrong(ref, [(FEEDS, ref.outputs(FEEDS, "out") + 0.05, None)], "out", 1e-3)
    assert said.startswith("the graph is wrong") and "weight noise" in said


def test_an_input_without_a_rule_is_refused_at_export_naming_it():
    from toolchain.export.feeds import feed_rules
    from toolchain.runtime.errors import ExportError

    config = SimpleNamespace(model_type="layoutlm")
    assert feed_rules(["input_ids", "position_ids"], config) == {"input_ids": "ids", "position_ids": "positions"}
    with pytest.raises(ExportError, match=r"the layoutlm graph takes inputs \['bbox'\] that the runtime cannot fill"):
        feed_rules(["input_ids", "bbox"], config)
