"""Hugging Face encoder-decoders (T5, BART, Marian, mBART) exported by optimum and rewritten to the two-graph contract
of runtime/seq2seq_io.py: the graphs keep the contract's names and axes, and a greedy loop written from the
contract alone (encoder once, decoder step by step from the first-step state) gives transformers' logits at every
step and generate()'s tokens. The tiny random models are built in tiny_seq2seq_hf.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers

import onnx

import tiny_seq2seq_hf as tiny
from toolchain.export import seq2seq_fuse
from toolchain.export.seq2seq_hf import decoder_start_and_eos, export_hf_seq2seq
from toolchain.runtime import seq2seq_io as io
from toolchain.runtime.errors import ExportError

SOURCES = ["the quick brown fox jumps over the lazy dog .", "a dull story"]  # uneven: the second is right-padded
STEPS = 8
ATOL = 1e-3
# (decoder start, EOS ids): T5 and Marian start from pad, BART from EOS (its decoder_start_token_id), mBART
# (no decoder_start_token_id) from BOS, as generate() does
START_EOS = {"t5": (0, [1]), "bart": (2, [2]), "marian": (2, [0]), "mbart": (0, [2])}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(family) -> (model dir, {"encoder": path, "decoder": path}), built and exported once per module."""
    cache: dict[str, tuple] = {}

    def make(family: str):
        if family not in cache:
            model_dir = tiny.build(family, tmp_path_factory.mktemp(family))
            cache[family] = model_dir, export_hf_seq2seq(model_dir, tmp_path_factory.mktemp(f"{family}-onnx"))
        return cache[family]

    return make


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(value) -> list:
    return list(value.shape)


def _first_state(decoder: ort.InferenceSession, encoded: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The contract's first-step state: the encoder's past.<x> where it outputs one, else zeros with every
    ``past_sequence`` axis 0 and every ``batch`` axis BATCH."""
    state = {}
    for value in decoder.get_inputs():
        if value.name.startswith(io.PAST):
            shape = [batch if d == io.BATCH_AXIS else 0 if d == io.PAST_AXIS else d for d in _dims(value)]
            assert all(isinstance(d, int) for d in shape), f"{value.name} has an axis the runtime cannot size: {shape}"
            state[value.name] = encoded.get(value.name, np.zeros(shape, np.float32))
    return state


def _greedy(paths, ids: np.ndarray, mask: np.ndarray, start: int, reference) -> tuple[np.ndarray, float]:
    """Greedy decoding by the contract for STEPS steps: the tokens (start included) and the largest difference
    between each step's logits and REFERENCE(prefix) (transformers' last-position logits for that prefix)."""
    encoder, decoder = _session(paths[io.ENCODER]), _session(paths[io.DECODER])
    names = [o.name for o in encoder.get_outputs()]
    encoded = dict(zip(names, encoder.run(None, {io.SOURCE_IDS: ids, io.SOURCE_MASK: mask})))
    memory = {k: v for k, v in encoded.items() if not k.startswith(io.PAST)}
    state = _first_state(decoder, encoded, len(ids))
    tokens, worst = np.full((len(ids), 1), start, np.int64), 0.0
    out_names = [o.name for o in decoder.get_outputs()]
    for _ in range(STEPS):
        feed = {io.STEP_IDS: tokens[:, -1:], io.MEMORY_MASK: mask, **memory, **state}
        out = dict(zip(out_names, decoder.run(None, feed)))
        logits, expected = out[io.LOGITS], reference(tokens)
        assert logits.shape == expected.shape  # (batch, vocab)
        worst = max(worst, float(np.abs(logits - expected).max()))
        state = {name: out[io.present_name(name)] for name in state}
        tokens = np.concatenate([tokens, logits.argmax(-1)[:, None]], axis=1)
    return tokens, worst


def _until_eos(row, eos: list[int]) -> list[int]:
    """ROW's tokens up to and including its first EOS after the start token (what follows does not matter)."""
    row = [int(t) for t in row]
    ends = [i for i, t in enumerate(row[1:], 1) if t in eos]
    return row[: ends[0] + 1] if ends else row


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_greedy_loop_by_the_contract_matches_transformers(exported, family):
    model_dir, paths = exported(family)
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()
    batch = tok(SOURCES, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    assert mask[1].sum() < mask.shape[1] and mask[1, -1] == 0  # really uneven and right-padded
    start, eos = decoder_start_and_eos(model.generation_config)
    assert (start, eos) == START_EOS[family]

    def reference(prefix: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         decoder_input_ids=torch.from_numpy(prefix)).logits[:, -1].numpy()

    tokens, worst = _greedy(paths, ids, mask, start, reference)
    assert worst <= ATOL, f"{family}: step logits differ from transformers' by {worst:.2e}"
    with torch.no_grad():
        generated = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   do_sample=False, num_beams=1, max_new_tokens=STEPS).numpy()
    for ours, theirs in zip(tokens, generated):
        assert _until_eos(ours, eos) == _until_eos(theirs, eos)
    assert len({int(t) for t in tokens[:, 1:].ravel()}) > 1  # the tiny model says more than one token


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_graphs_keep_the_contract_names_and_axes(exported, family):
    _, paths = exported(family)
    assert set(paths) == set(io.COMPONENTS) and all(p.is_file() for p in paths.values())
    encoder, decoder = _session(paths[io.ENCODER]), _session(paths[io.DECODER])
    assert {v.name: _dims(v) for v in encoder.get_inputs()} == {
        io.SOURCE_IDS: [io.BATCH_AXIS, io.SOURCE_AXIS], io.SOURCE_MASK: [io.BATCH_AXIS, io.SOURCE_AXIS]}
    memory = {v.name: _dims(v) for v in encoder.get_outputs()}
    assert memory and not any(name.startswith(io.PAST) for name in memory)  # cross K/V: fed every step, not state
    inputs = {v.name: _dims(v) for v in decoder.get_inputs()}
    assert inputs[io.STEP_IDS] == [io.BATCH_AXIS, 1]
    assert inputs[io.MEMORY_MASK] == [io.BATCH_AXIS, io.SOURCE_AXIS]
    assert {k: inputs[k] for k in memory} == memory  # every encoder output, by its name and axes
    past = {k: v for k, v in inputs.items() if k.startswith(io.PAST)}
    assert set(inputs) == {io.STEP_IDS, io.MEMORY_MASK, *memory, *past}
    assert len(past) == 4  # 2 layers x self-attention key, value
    for dims in past.values():
        assert dims[0] == io.BATCH_AXIS and io.PAST_AXIS in dims
        assert all(d in (io.BATCH_AXIS, io.PAST_AXIS) or isinstance(d, int) for d in dims)
    outputs = {v.name: _dims(v) for v in decoder.get_outputs()}
    assert set(outputs) == {io.LOGITS, *(io.present_name(p) for p in past)}
    assert outputs[io.LOGITS][0] == io.BATCH_AXIS and len(outputs[io.LOGITS]) == 2


def test_a_model_that_is_not_an_encoder_decoder_is_refused(tmp_path):
    model_dir = tiny.build_bert(tmp_path / "tiny-bert")
    with pytest.raises(ExportError) as info:
        export_hf_seq2seq(model_dir, tmp_path / "out")
    message = str(info.value)
    assert "tiny-bert" in message and "not an encoder-decoder" in message and message.count(". ") == 0
    assert not (tmp_path / "out").exists()


def test_an_optimum_failure_is_an_export_error(exported, tmp_path, monkeypatch):
    model_dir, _ = exported("bart")
    import optimum.exporters.onnx as onnx_exporter

    def fail(*args, **kwargs):
        raise ValueError("unsupported thing\nstack")

    monkeypatch.setattr(onnx_exporter, "main_export", fail)
    with pytest.raises(ExportError, match=rf"optimum could not export {model_dir.name} .*unsupported thing; check"):
        export_hf_seq2seq(model_dir, tmp_path / "out")


def test_decoder_start_and_eos_fallbacks():
    assert decoder_start_and_eos(SimpleNamespace(decoder_start_token_id=None, bos_token_id=None, pad_token_id=3,
                                                 eos_token_id=[5, 6, 5])) == (3, [5, 6])
    with pytest.raises(ExportError, match="sets no eos_token_id; set it"):
        decoder_start_and_eos(SimpleNamespace(decoder_start_token_id=1, eos_token_id=None, model_type="t5"))


def _graph(path) -> onnx.GraphProto:
    return onnx.load(str(path)).graph


def _attention(graph) -> list:
    return [n for n in graph.node if n.op_type == seq2seq_fuse.FUSED_OP and n.domain == seq2seq_fuse.MS_DOMAIN]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_every_attention_block_is_fused(exported, family):
    """Encoder self-attention and decoder self- and cross-attention each become one MultiHeadAttention node
    (no Softmax is left); the decoder's cache is read and written by the fused nodes, under the contract's names."""
    _, paths = exported(family)
    layers = tiny.LAYERS
    encoder, decoder = _graph(paths[io.ENCODER]), _graph(paths[io.DECODER])
    assert len(_attention(encoder)) == layers and not [n for n in encoder.node if n.op_type == "Softmax"]
    assert len(_attention(decoder)) == 2 * layers and not [n for n in decoder.node if n.op_type == "Softmax"]
    cached = [n for n in _attention(decoder) if len(n.input) > 6]
    assert sorted(n.input[6] for n in cached) == [f"{io.PAST}{i}.decoder.key" for i in range(layers)]
    assert sorted(n.output[1] for n in cached) == [f"{io.PRESENT}{i}.decoder.key" for i in range(layers)]
    crossed = [n for n in _attention(decoder) if len(n.input) <= 6]
    assert sorted(n.input[1] for n in crossed) == [f"cross.{i}.key" for i in range(layers)]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_decoder_step_builds_no_causal_mask(exported, family):
    """One new token sees every cached position: the causal mask (all zeros) is dropped, with the nodes that
    built it. What stays on self-attention is T5's position bias (a Gather of its bias table), nothing on BART's."""
    _, paths = exported(family)
    decoder = _graph(paths[io.DECODER])
    assert not {"ScatterND", "Greater"} & {n.op_type for n in decoder.node}
    biases = {n.input[5] if len(n.input) > 5 else "" for n in _attention(decoder) if len(n.input) > 6}
    assert (biases != {""}) == (family == "t5")


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_encoder_holds_only_the_cross_projections(exported, family):
    """The cross-attention keys/values are cut out of the first decoder step without the decoder stream they read
    only for its batch size: the encoder holds no second embedding table and no decoder layer, only one key and
    one value weight per layer, and does not read a decoder token."""
    _, paths = exported(family)
    encoder = _graph(paths[io.ENCODER])
    cross = {i.name: list(i.dims) for i in encoder.initializer if i.name.startswith("cross/") and len(i.dims) == 2}
    assert len(cross) == 2 * tiny.LAYERS, sorted(cross)  # no embedding table, no decoder-layer weight
    assert all(dims[0] == tiny.D_MODEL for dims in cross.values())  # projections of the encoder's states
    assert not [n for n in encoder.node if n.name == "cross/first_ids"]


def test_a_fusion_that_changes_the_outputs_is_not_kept(exported, tmp_path, monkeypatch):
    """fuse_checked compares the fused graph with the unfused one on random feeds: a wrong fusion (here every
    attention scaled twice) is dropped, and the export keeps the unfused graphs, which still match transformers."""
    model_dir, _ = exported("bart")
    fuse = seq2seq_fuse.fuse_attention

    def wrong(model):
        count = fuse(model)
        for node in _attention(model.graph):
            next(a for a in node.attribute if a.name == "scale").f *= 2
        return count

    monkeypatch.setattr(seq2seq_fuse, "fuse_attention", wrong)
    paths = export_hf_seq2seq(model_dir, tmp_path / "out")
    encoder, decoder = _graph(paths[io.ENCODER]), _graph(paths[io.DECODER])
    assert not _attention(encoder) and not _attention(decoder)
    assert [n for n in decoder.node if n.op_type == "Softmax"]
    graph, note = seq2seq_fuse.fuse_checked(onnx.load(str(paths[io.DECODER])), cached=True)
    assert not _attention(graph.graph) and note.startswith("the fused graph was not kept: logits differs by")
