"""Running an ONNX graph on random feeds keyed by the seq2seq contract's axis names, and comparing two graphs
that must compute the same thing: how export/seq2seq_fuse.py checks a rewritten graph before keeping it."""

from __future__ import annotations

from typing import Any

from toolchain.export.source import import_optional
from toolchain.runtime import seq2seq_io as io

PROBES = ((1, 0, 3), (2, 1, 5), (3, 6, 4), (1, 17, 9))  # (batch, past_sequence, source) the probes run at
RTOL = 1e-4  # fused vs unfused outputs: |diff| <= RTOL * max(1, |unfused|.max())


def random_feeds(model: Any, batch: int, past: int, source: int, seed: int) -> dict[str, Any]:
    """Random feeds for MODEL's inputs: axes from the contract's names, ids small, masks with one padded row."""
    np = import_optional("numpy")
    onnx = import_optional("onnx")
    rng = np.random.default_rng(seed)
    sizes = {io.BATCH_AXIS: batch, io.PAST_AXIS: past, io.SOURCE_AXIS: source}
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value if d.HasField("dim_value") else sizes.get(d.dim_param, 1)
                 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if value.name in (io.SOURCE_MASK, io.MEMORY_MASK):
            mask = np.ones(shape, dtype)
            mask[-1, max(1, shape[-1] // 2):] = 0 if batch > 1 else 1
            feeds[value.name] = mask
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


class Runner:
    """An ONNX Runtime CPU session of a ModelProto (written to a temporary directory: any size)."""

    def __init__(self, model: Any, extra_outputs: tuple[str, ...] = ()):
        import tempfile

        onnx = import_optional("onnx")
        ort = import_optional("onnxruntime")
        model = self._copy(model, extra_outputs)  # saving with external data rewrites the proto it saves
        with tempfile.TemporaryDirectory(prefix="seq2seq-fuse-") as tmp:
            path = f"{tmp}/model.onnx"
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location="model.onnx.data", size_threshold=1024)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _copy(model: Any, extra: tuple[str, ...]) -> Any:
        onnx = import_optional("onnx")
        out = type(model)()
        out.CopyFrom(model)
        known = {o.name for o in out.graph.output}
        out.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra if n not in known)
        return out

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return dict(zip(self.names, self.session.run(None, feeds)))


def same_outputs(reference: Any, candidate: Any, probes=PROBES) -> str | None:
    """None when CANDIDATE's outputs equal REFERENCE's (RTOL) on random feeds at every probe, else what differs."""
    np = import_optional("numpy")
    ref, new = Runner(reference), Runner(candidate)
    for k, (batch, past, source) in enumerate(probes):
        feeds = random_feeds(reference, batch, past, source, 100 + k)
        expected, got = ref(feeds), new(feeds)
        for name, want in expected.items():
            have = got.get(name)
            if have is None or have.shape != want.shape:
                return f"{name} has shape {None if have is None else have.shape}, not {want.shape}"
            worst = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
            if not worst <= RTOL * max(1.0, float(np.abs(want).max()) if want.size else 0.0):
                return f"{name} differs by {worst:.2e} at batch {batch}, cache {past}, source {source}"
    return None
