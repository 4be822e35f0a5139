"""The CUDA provider without a GPU: options, honest negotiation, per-node CPU fallback from ONNX Runtime's
profile, IO binding, and which variant `auto` picks per provider. ORT sessions are real (on CPU) wherever
the logic allows; fakes stand in only for what needs a GPU (a session that reports CUDA)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from toolchain.runtime import ArtifactError, InputError, ProviderError, load
from toolchain.runtime import placement as placement_mod
from toolchain.runtime import providers as providers_mod
from toolchain.runtime.manifest import Manifest, Variant
from toolchain.runtime.model import TextGenerator, bound_run, choose_variant
from toolchain.runtime.placement import HEAVY_OPS, from_profile, parse_profile
from toolchain.runtime.providers import (CPU, CUDA, CudaOptions, CudaStartError, Negotiated, negotiate, parse_bytes,
                                         session_providers)

REAL_SESSION = ort.InferenceSession
TEXTS = ["a cat sat on the mat", "ok", "the film was a delight from start to finish"]


# -- CudaOptions ------------------------------------------------------------------------------------------
def test_cuda_options_defaults_and_provider_options():
    o = CudaOptions()
    assert o.provider_options() == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "1"}
    o = CudaOptions(device_id=1, gpu_mem_limit="2GiB", cudnn_conv_algo_search="heuristic", use_tf32=False)
    assert o.provider_options() == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0",
                                    "gpu_mem_limit": str(2 << 30)}
    assert CudaOptions.coerce({"gpu_mem_limit": 512}) == CudaOptions(gpu_mem_limit=512)
    assert CudaOptions.coerce(None) == CudaOptions() and CudaOptions.coerce(o) is o
    assert session_providers([CUDA, CPU], o) == [(CUDA, o.provider_options()), CPU]
    assert session_providers([CPU], o) == [CPU]


@pytest.mark.parametrize("text, expected", [("4GB", 4 * 10**9), ("512MiB", 512 << 20), ("1e9", 10**9),
                                            (" 2 gib ", 2 << 30), ("1000", 1000), (123, 123)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("kwargs, match", [
    ({"device_id": -1}, "device_id must be an int >= 0"),
    ({"device_id": "0"}, "device_id must be an int >= 0"),
    ({"device_id": True}, "device_id must be an int >= 0"),
    ({"gpu_mem_limit": 0}, "gpu_mem_limit must be a positive number of bytes"),
    ({"gpu_mem_limit": "lots"}, "gpu_mem_limit 'lots' is not a size; give bytes or a number with a unit"),
    ({"gpu_mem_limit": "4 parsecs"}, "is not a size"),
    ({"cudnn_conv_algo_search": "FAST"}, "cudnn_conv_algo_search must be one of EXHAUSTIVE, HEURISTIC, DEFAULT"),
    ({"use_tf32": "yes"}, "use_tf32 must be True or False"),
    ({"check_placement": 1}, "check_placement must be True or False"),
])
def test_cuda_options_are_checked(kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        CudaOptions(**kwargs)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")  # one sentence


def test_cuda_options_coerce_refuses_unknown():
    with pytest.raises(InputError, match=r"CUDA option 'device' is not known; use check_placement, .*device_id"):
        CudaOptions.coerce({"device": 0})
    with pytest.raises(InputError, match="cuda must be a CudaOptions, a dict of its fields or None"):
        CudaOptions.coerce(0)
    with pytest.raises(InputError, match="device_id must be"):
        CudaOptions.coerce({"device_id": -2})


def test_not_applied_compares_values_not_spelling():
    o = CudaOptions(device_id=1, gpu_mem_limit=1 << 30, cudnn_conv_algo_search="HEURISTIC")
    same = {"device_id": "1", "gpu_mem_limit": str(1 << 30), "use_tf32": "1", "cudnn_conv_algo_search": "heuristic",
            "arena_extend_strategy": "kNextPowerOfTwo"}
    assert o.not_applied(same) == []
    assert o.not_applied({**same, "device_id": "0"}) == ["device_id=1 (in use: 0)"]
    assert CudaOptions().not_applied({}) == []  # nothing reported: nothing to hold against it


# -- negotiation with options (fake sessions) ---------------------------------------------------------------
class FakeSession:
    def __init__(self, providers, options=None):
        self._providers, self._options = providers, options or {}

    def get_providers(self):
        return self._providers

    def get_provider_options(self):
        return self._options


def factory(behaviour: str, applied_device: str | None = None):
    """behaviour: 'works', 'silent' (ORT drops CUDA quietly), 'raises' (ORT raised starting CUDA)."""
    asked = []

    def make(providers):
        asked.append(list(providers))
        if CUDA not in providers:
            return FakeSession([CPU])
        if behaviour == "raises":
            raise CudaStartError("CUDA failure 101: invalid device ordinal")
        if behaviour == "silent":
            return FakeSession([CPU])
        return FakeSession([CUDA, CPU], {CUDA: {"device_id": applied_device or "0"}, CPU: {}})

    return make, asked


def test_negotiated_carries_the_options():
    make, _ = factory("works", applied_device="2")
    n = negotiate("cuda", make, [CUDA, CPU], {"device_id": 2})
    assert n.provider == "cuda" and n.cuda == CudaOptions(device_id=2) and n.fallback_reason is None


def test_options_not_applied_is_not_cuda_as_asked():
    # ONNX Runtime's Python layer retries a failed start with the CUDA defaults: device 1 becomes device 0
    make, asked = factory("works", applied_device="0")
    with pytest.raises(ProviderError, match=r"could not start CUDA with the requested options .*device_id=1 \(in use: 0\)"):
        negotiate("cuda", make, [CUDA, CPU], CudaOptions(device_id=1))
    n = negotiate("auto", make, [CUDA, CPU], CudaOptions(device_id=1))
    assert n.provider == "cpu" and "device_id=1" in n.fallback_reason
    assert asked[-1] == [CPU]  # a fresh CPU session, not the CUDA one on the wrong GPU


def test_cuda_start_error(caplog, monkeypatch):
    monkeypatch.setattr(providers_mod, "has_nvidia_device", lambda: True)  # a GPU that failed to start: warned
    monkeypatch.setattr(providers_mod, "_warned", set())
    make, _ = factory("raises")
    with pytest.raises(ProviderError, match=r"provider 'cuda' was requested but ONNX Runtime's CUDA provider failed "
                                            r"to start \(CUDA failure 101"):
        negotiate("cuda", make, [CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="toolchain.runtime"):
        n = negotiate("auto", make, [CUDA, CPU], {"device_id": 7})
        negotiate("auto", make, [CUDA, CPU], {"device_id": 7})
    assert n.provider == "cpu" and "failed to start" in n.fallback_reason
    assert len([r for r in caplog.records if "falling back to CPU" in r.getMessage()]) == 1  # once per reason


# -- the profile parser -----------------------------------------------------------------------------------
def _node(name, op, provider, index, dur=10):
    return {"cat": "Node", "pid": 1, "tid": 1, "dur": dur, "ts": index * 100, "ph": "X", "name": f"{name}_kernel_time",
            "args": {"op_name": op, "provider": provider, "node_index": str(index), "output_size": "64"}}


SYNTHETIC = [
    {"cat": "Session", "name": "model_loading_uri", "args": {}},
    {"cat": "Session", "name": "session_initialization", "args": {}},
    {"cat": "Node", "name": "Shape_1_fence_before", "args": {"op_name": "Shape"}},  # fences name no provider
    _node("Shape_1", "Shape", CPU, 1),
    _node("Gather_2", "Gather", CPU, 2),
    _node("Gather_3", "Gather", CPU, 3),
    _node("MatMul_4", "MatMul", CUDA, 4),
    _node("Memcpy_5", "MemcpyFromHost", CUDA, 5),
    _node("MatMul_6", "MatMul", CPU, 6),
    _node("LayerNorm_7", "LayerNormalization", CUDA, 7),
    {"cat": "Session", "name": "SequentialExecutor::Execute", "args": {}},
    # a second run: the same nodes again, counted once
    _node("Shape_1", "Shape", CPU, 1), _node("MatMul_6", "MatMul", CPU, 6),
]


def test_parse_profile_counts_each_node_once():
    p = parse_profile(SYNTHETIC)
    assert p.nodes == {"cpu": 4, "cuda": 3}
    assert p.cpu_ops == {"Gather": 2, "Shape": 1, "MatMul": 1}
    assert p.memcpy == 1 and p.heavy == {"MatMul": 1}
    info = p.info()
    assert info["heavy_cpu_fallback"] is True
    assert {"op_type": "MatMul", "count": 1, "heavy": True} in info["cpu_fallback_nodes"]
    assert {"op_type": "Shape", "count": 1, "heavy": False} in info["cpu_fallback_nodes"]
    assert "3 on cuda" in info["placement"] and "Gather x2" in info["placement"] and "1 CPU<->device copy" in info["placement"]
    assert parse_profile({"traceEvents": SYNTHETIC}).nodes == p.nodes


def test_parse_profile_light_fallback_is_not_heavy():
    light = [e for e in SYNTHETIC if e.get("name") != "MatMul_6_kernel_time"]
    info = parse_profile(light).info()
    assert info["heavy_cpu_fallback"] is False and [n["op_type"] for n in info["cpu_fallback_nodes"]] == ["Gather", "Shape"]
    assert {"MatMul", "Gemm", "Conv", "Attention", "LayerNormalization", "DynamicQuantizeLinear"} <= HEAVY_OPS


@pytest.mark.parametrize("bad", [[], [{"cat": "Session"}], [{"cat": "Node", "name": "x_kernel_time", "args": {}}], "x", 3])
def test_parse_profile_refuses_profiles_without_placements(bad):
    with pytest.raises(ValueError):
        parse_profile(bad)


def test_from_profile_reports_removes_and_warns_once(tmp_path, caplog):
    folder = tmp_path / (placement_mod.PROFILE_DIR_PREFIX + "x")
    folder.mkdir()
    path = folder / "profile_1.json"
    path.write_text(json.dumps(SYNTHETIC))
    with caplog.at_level(logging.WARNING, logger="toolchain.runtime"):
        info = from_profile(str(path), "cuda")
        assert info["heavy_cpu_fallback"] is True and not folder.exists()
        folder.mkdir()
        (folder / "p.json").write_text(json.dumps(SYNTHETIC))
        from_profile(str(folder / "p.json"), "cuda")
    assert not folder.exists()
    warnings = [r.getMessage() for r in caplog.records if "on CPU although the session is on CUDA" in r.getMessage()]
    assert len(warnings) <= 1 and (not warnings or "MatMul x1" in warnings[0])


def test_from_profile_not_applicable_unreadable_and_failed(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(SYNTHETIC))
    assert from_profile(str(path), "cpu") == placement_mod.NOT_APPLICABLE and not path.exists()
    path.write_text("{not json")
    info = from_profile(str(path), "cuda")
    assert info["cpu_fallback_nodes"] is None and info["placement"].startswith("not checked: ONNX Runtime's profile")
    info = from_profile("", "cuda", RuntimeError("CUDA out of memory\nmore"))
    assert info["placement"] == "not checked: the warm-up run failed (CUDA out of memory)"


def test_real_profile_on_cpu_end_to_end(tiny_artifact, tmp_path):
    """A CPU session's own profile goes through the parser: every node named, all on CPUExecutionProvider."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = REAL_SESSION(str(tiny_artifact("bert") / "model.onnx"), sess_options=options, providers=[CPU])
    model = load(tiny_artifact("bert"), provider="cpu")
    feeds, _ = model.encode(TEXTS)
    session.run(None, feeds)
    session.run(None, feeds)
    path = session.end_profiling()
    p = parse_profile(json.loads(Path(path).read_text()))
    assert set(p.nodes) == {"cpu"} and p.nodes["cpu"] == sum(p.cpu_ops.values()) > 10
    assert p.heavy  # the MatMuls of a BERT, read from the profile
    assert session.end_profiling() == ""  # profiling stops at the first end_profiling: later runs pay nothing


# -- a session that says it is on CUDA (a real CPU session underneath) -------------------------------------
class _DeviceToCpuBinding:
    """ORT's IO binding with the device names rewritten to cpu, recording what was bound."""

    def __init__(self, real, log):
        self._real, self._log = real, log

    def bind_cpu_input(self, name, value):
        self._log.append(("input", name, value.shape))
        self._real.bind_cpu_input(name, value)

    def bind_output(self, name, device="cpu", device_id=0, *rest):
        self._log.append(("output", name, device, device_id))
        self._real.bind_output(name, "cpu", 0)

    def __getattr__(self, name):
        return getattr(self._real, name)


def pretend_cuda(monkeypatch, applied_device: str | None = None):
    """Make onnxruntime build sessions that report the CUDA provider (with its options) but run on CPU."""
    calls, binds = [], []

    class CudaPretend:
        def __init__(self, path, sess_options=None, providers=None):
            calls.append({"providers": providers, "profiling": bool(sess_options and sess_options.enable_profiling)})
            self._real = REAL_SESSION(path, sess_options=sess_options, providers=[CPU])
            self._cuda = providers[0] if providers and isinstance(providers[0], tuple) else None

        def get_providers(self):
            return [CUDA, CPU] if self._cuda else [CPU]

        def get_provider_options(self):
            if not self._cuda:
                return {CPU: {}}
            return {CUDA: {**self._cuda[1], **({"device_id": applied_device} if applied_device else {})}, CPU: {}}

        def io_binding(self):
            return _DeviceToCpuBinding(self._real.io_binding(), binds)

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(ort, "InferenceSession", CudaPretend)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    return calls, binds


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_cuda_session_reports_cpu_fallback_from_its_profile(tiny_artifact, monkeypatch, private_tmp, caplog):
    art = tiny_artifact("bert")
    expected = load(art, provider="cpu").embed(TEXTS)
    calls, binds = pretend_cuda(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="toolchain.runtime"):
        model = load(art, provider="cuda", cuda={"device_id": 0, "gpu_mem_limit": "1GB"})
    info = model.info()
    assert info["provider"] == "cuda" and info["providers"] == [CUDA, CPU] and info["io_binding"] is True
    assert info["cuda_options"]["gpu_mem_limit"] == 10**9 and info["cuda_options"]["device_id"] == 0
    assert calls[0]["providers"][0] == (CUDA, {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                              "use_tf32": "1", "gpu_mem_limit": "1000000000"})
    assert calls[0]["profiling"] is True
    # every node really ran on CPU: the profile says so, MatMuls included
    assert info["heavy_cpu_fallback"] is True
    ops = {n["op_type"]: n for n in info["cpu_fallback_nodes"]}
    assert ops["MatMul"]["heavy"] is True and "on cpu" in info["placement"]
    np.testing.assert_allclose(model.embed(TEXTS), expected, atol=1e-6)
    outputs = [b for b in binds if b[0] == "output"]
    assert outputs and all(b[1:] == ("last_hidden_state", "cuda", 0) for b in outputs)
    assert not any(private_tmp.iterdir())  # the profile and its folder are gone


def test_no_placement_check_no_profiling(tiny_artifact, monkeypatch, private_tmp):
    calls, _ = pretend_cuda(monkeypatch)
    info = load(tiny_artifact("bert"), provider="cuda", cuda=CudaOptions(check_placement=False)).info()
    assert calls[0]["profiling"] is False and info["cpu_fallback_nodes"] is None
    assert info["placement"].startswith("not checked")


def test_device_mismatch_refused_and_auto_falls_back(tiny_artifact, monkeypatch, private_tmp):
    pretend_cuda(monkeypatch, applied_device="0")
    with pytest.raises(ProviderError, match=r"device_id=1 \(in use: 0\); use provider='cpu' or 'auto'\."):
        load(tiny_artifact("bert"), provider="cuda", cuda={"device_id": 1})
    model = load(tiny_artifact("bert"), provider="auto", cuda={"device_id": 1})
    info = model.info()
    assert info["provider"] == "cpu" and "device_id=1" in info["fallback_reason"]
    assert info["placement"].startswith("not applicable") and info["cuda_options"] is None
    assert not any(private_tmp.iterdir())


def test_cuda_that_raises_vs_a_broken_graph(tiny_artifact, monkeypatch, tmp_path):
    asked = []

    def raising(path, sess_options=None, providers=None):
        asked.append(providers)
        if any(isinstance(p, tuple) for p in providers):
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return REAL_SESSION(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", raising)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(ProviderError, match=r"failed to start \(CUDA failure 100: no CUDA-capable device"):
        load(tiny_artifact("bert"), provider="cuda")
    assert load(tiny_artifact("bert"), provider="auto").info()["provider"] == "cpu"

    def broken(path, sess_options=None, providers=None):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : broken")

    monkeypatch.setattr(ort, "InferenceSession", broken)
    with pytest.raises(ArtifactError):  # the graph's fault, said as such, not blamed on CUDA
        load(tiny_artifact("bert"), provider="cuda")


def test_text_generation_on_another_gpu_is_refused(tmp_path):
    manifest = Manifest(tmp_path, "text-generation", {}, {"max_length": 16})
    negotiated = Negotiated(FakeSession([CUDA, CPU]), "cuda", "cuda", cuda=CudaOptions(device_id=1))
    with pytest.raises(ProviderError, match="keeps its cache on device 0; pass device_id=0 .*CUDA_VISIBLE_DEVICES"):
        TextGenerator(manifest, "fp32", negotiated, 8)


def test_this_machine_auto_and_cuda(tiny_artifact, private_tmp):
    """Here (no GPU) auto runs on CPU with placement not applicable and leaves no profile behind."""
    if ort.get_device() == "GPU" and CUDA in ort.get_available_providers():
        from toolchain.bench.cuda import cuda_unusable

        if cuda_unusable() is None:
            pytest.skip("CUDA works here: tests/gpu covers this machine")
    info = load(tiny_artifact("bert"), provider="auto").info()
    assert info["provider"] == "cpu" and info["placement"].startswith("not applicable")
    assert info["io_binding"] is False and info["cuda_options"] is None
    with pytest.raises(ProviderError, match="provider 'cuda' was requested but"):
        load(tiny_artifact("bert"), provider="cuda")
    assert not any(private_tmp.iterdir())


# -- IO binding ---------------------------------------------------------------------------------------------
def test_bound_run_equals_run_on_cpu(tiny_artifact):
    model = load(tiny_artifact("bert", "text-classification"), provider="cpu")
    feeds, _ = model.encode(TEXTS)
    session = model._session
    np.testing.assert_array_equal(bound_run(session, feeds, "logits", "cpu", 0), session.run(["logits"], feeds)[0])
    plain = model.classify(TEXTS)
    model._io = ("cpu", 0)  # the CUDA path of run_feeds, on this machine's device
    assert model.classify(TEXTS) == plain and model.info()["io_binding"] is True


def test_bound_run_copies_once_each_way():
    log = []

    class Binding:
        def bind_cpu_input(self, name, value):
            log.append(("in", name, value.flags["C_CONTIGUOUS"]))

        def bind_output(self, name, device, device_id):
            log.append(("out", name, device, device_id))

        def copy_outputs_to_cpu(self):
            log.append(("copy",))
            return [np.ones((2, 3), np.float32)]

    class Session:
        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            log.append(("run",))

    feeds = {"input_ids": np.zeros((3, 2), np.int64).T, "attention_mask": np.ones((2, 3), np.int64)}
    out = bound_run(Session(), feeds, "last_hidden_state", "cuda", 3)
    assert out.shape == (2, 3)
    assert log == [("in", "input_ids", True), ("in", "attention_mask", True),
                   ("out", "last_hidden_state", "cuda", 3), ("run",), ("copy",)]


# -- auto per provider (synthetic manifests) ---------------------------------------------------------------
def _manifest(tmp_path, **variants) -> Manifest:
    """variants: name=(precision, passed, {provider: p50_ms})."""
    made = {n: Variant(n, f"{n}.onnx", "0" * 64, 1, precision, passed, latency={p: {"p50_ms": ms} for p, ms in lat.items()})
            for n, (precision, passed, lat) in variants.items()}
    return Manifest(tmp_path, "feature-extraction", made, {"max_length": 8})


def test_auto_on_cuda_never_takes_int8_benched_on_cpu_only(tmp_path):
    m = _manifest(tmp_path, fp32=("fp32", True, {"cpu": 10.0}), int8=("int8", True, {"cpu": 3.0}))
    assert choose_variant(m, "auto", "cpu") == "int8"
    assert choose_variant(m, "auto", "cuda") == "fp32"


def test_auto_on_cuda_takes_int8_benched_faster_on_cuda(tmp_path):
    m = _manifest(tmp_path, fp32=("fp32", True, {"cuda": 2.0}), int8=("int8", True, {"cuda": 1.0, "cpu": 9.0}))
    assert choose_variant(m, "auto", "cuda") == "int8"
    m = _manifest(tmp_path, fp32=("fp32", True, {}), int8=("int8", True, {"cuda": 1.0}))
    assert choose_variant(m, "auto", "cuda") == "fp32"  # fp32 not measured on cuda: nothing to be faster than
    m = _manifest(tmp_path, fp32=("fp32", True, {"cuda": 2.0}), int8=("int8", True, {"cuda": 3.0}))
    assert choose_variant(m, "auto", "cuda") == "fp32"


def test_auto_on_cpu_never_takes_fp16_benched_on_cuda_only(tmp_path):
    m = _manifest(tmp_path, fp32=("fp32", True, {"cpu": 10.0, "cuda": 2.0}), fp16=("fp16", True, {"cuda": 1.0}))
    assert choose_variant(m, "auto", "cpu") == "fp32"
    assert choose_variant(m, "auto", "cuda") == "fp16"
    m = _manifest(tmp_path, fp32=("fp32", True, {"cpu": 10.0}), fp16=("fp16", True, {"cpu": 5.0}))
    assert choose_variant(m, "auto", "cpu") == "fp16"  # benched faster on CPU: fine


def test_auto_without_fp32(tmp_path):
    m = _manifest(tmp_path, fp32=("fp32", False, {}), int8=("int8", True, {}), fp16=("fp16", True, {}))
    assert choose_variant(m, "auto", "cuda") == "fp16" and choose_variant(m, "auto", "cpu") == "int8"
    m = _manifest(tmp_path, int8=("int8", True, {}), int4=("int4", True, {"cuda": 4.0}))
    assert choose_variant(m, "auto", "cuda") == "int4"  # benched on cuda: the only evidence there is
    m = _manifest(tmp_path, int8=("int8", True, {"cpu": 1.0}))
    with pytest.raises(ArtifactError, match=r"known to suit cuda .*toolchain bench .* --provider cuda"):
        choose_variant(m, "auto", "cuda")
