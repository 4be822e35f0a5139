"""The seed encoder-decoder translators (train/modules/seq2seq_lstm.py, seq2seq_transformer.py): each builds
into a module and a Seq2SeqSpec that build_module accepts; step-by-step decoding with the graphs' state equals
the uncached teacher-forcing forward; a padded batch gives each item its own logits; both graphs export to
ONNX and onnxruntime decodes as torch does; bad configs are one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from toolchain.export.modules import Seq2SeqSpec, build_module, run_module  # noqa: E402
from toolchain.runtime.errors import SourceError  # noqa: E402
from toolchain.runtime.seq2seq_io import PAST, PAST_AXIS, present_name  # noqa: E402

LSTM = "toolchain.train.modules.seq2seq_lstm:build"
TRANSFORMER = "toolchain.train.modules.seq2seq_transformer:build"
TINY_LSTM = {"vocab_size": 40, "embed": 8, "hidden": 16}
TINY_TRANSFORMER = {"vocab_size": 40, "d_model": 16, "heads": 2, "ff": 32, "max_length": 32}
CASES = {
    "lstm-luong-bi-2layers": (LSTM, {**TINY_LSTM, "layers": 2}),
    "lstm-luong-uni": (LSTM, {**TINY_LSTM, "bidirectional": False}),
    "lstm-none-bi": (LSTM, {**TINY_LSTM, "attention": "none"}),
    "transformer-pre-norm": (TRANSFORMER, TINY_TRANSFORMER),
    "transformer-post-norm": (TRANSFORMER, {**TINY_TRANSFORMER, "norm_first": False, "decoder_layers": 1}),
}
# (case, method): dynamo costs seconds a graph. TorchScript is the exporter's fallback; it fixes the
# Transformer encoder's sizes (nn.MultiheadAttention's reshapes), so only the LSTMs are checked with it.
EXPORTED = [("lstm-luong-bi-2layers", "dynamo"), ("transformer-pre-norm", "dynamo"),
            ("lstm-luong-bi-2layers", "torchscript"), ("lstm-none-bi", "torchscript")]
LENGTHS = [4, 7, 2]  # uneven, and a source width (7) other than the export example's (5)
STEPS = 8


def tiny(case: str, seed: int = 0):
    torch.manual_seed(seed)
    entry, config = CASES[case]
    module, spec = build_module(entry, config)
    return module.eval(), spec


def empty_past(spec: Seq2SeqSpec, name: str, batch: int) -> torch.Tensor:
    """Zeros shaped like the example's state, with BATCH rows and an empty past_sequence axis."""
    io = next(t for t in spec.decoder.inputs if t.name == name)
    shape = list(spec.decoder.example([3, 5])[name].shape)
    shape[0] = batch
    for axis, axis_name in io.dynamic.items():
        if axis_name == PAST_AXIS:
            shape[axis] = 0
    return torch.zeros(shape)


def decode(run, spec: Seq2SeqSpec, encoded: dict, mask: torch.Tensor, forced: torch.Tensor | None = None):
    """STEPS decoder steps from BOS, feeding the argmax (or FORCED (B, STEPS)) back: logits (B, STEPS, V), tokens."""
    B = mask.size(0)
    state = {t.name: encoded[t.name] if t.name in encoded else empty_past(spec, t.name, B)
             for t in spec.decoder.inputs if t.name.startswith(PAST)}
    fixed = {k: v for k, v in encoded.items() if not k.startswith(PAST)}
    ids, logits, tokens = torch.full((B, 1), spec.bos_id, dtype=torch.int64), [], []
    for step in range(STEPS):
        out = run({"input_ids": ids, "encoder_attention_mask": mask, **fixed, **state})
        logits.append(out["logits"])
        ids = forced[:, step : step + 1] if forced is not None else out["logits"].argmax(-1, keepdim=True)
        tokens.append(ids)
        state = {name: out[present_name(name)] for name in state}
    return torch.stack(logits, dim=1), torch.cat(tokens, dim=1)


def torch_decode(module, spec, feeds, forced=None):
    encoded = run_module(module.encoder_graph, spec.encoder, feeds)
    return decode(lambda f: run_module(module.decoder_graph, spec.decoder, f), spec, encoded,
                  feeds["attention_mask"], forced)


@pytest.mark.parametrize("case", sorted(CASES))
def test_build_gives_a_module_and_a_seq2seq_spec_build_module_accepts(case, tmp_path):
    from safetensors.torch import save_file

    module, spec = tiny(case)
    assert isinstance(module, torch.nn.Module) and isinstance(spec, Seq2SeqSpec)
    assert (spec.bos_id, spec.eos_id, spec.pad_id) == (1, 2, 0)
    names = set(module.state_dict())
    assert not any(n.startswith(("encoder_graph", "decoder_graph")) for n in names)
    shared = {p.data_ptr() for p in module.parameters()}
    for graph in (module.encoder_graph, module.decoder_graph):  # the graphs hold the module's own weights
        assert {p.data_ptr() for p in graph.parameters()} <= shared
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_cached_step_decoding_equals_the_uncached_forward(case):
    module, spec = tiny(case)
    feeds = spec.encoder.example(LENGTHS)
    with torch.inference_mode():
        steps, tokens = torch_decode(module, spec, feeds)
        bos = torch.full((len(LENGTHS), 1), spec.bos_id, dtype=torch.int64)
        for i in range(STEPS):
            prefix = torch.cat([bos, tokens[:, :i]], dim=1)                  # (B, i + 1)
            full = module(feeds["input_ids"], feeds["attention_mask"], prefix)
            assert full.shape == (len(LENGTHS), i + 1, 40)
            torch.testing.assert_close(steps[:, i], full[:, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_padded_batch_decodes_each_item_as_alone(case):
    module, spec = tiny(case)
    feeds = spec.encoder.example(LENGTHS)
    wider = {k: torch.nn.functional.pad(v, (0, 3)) for k, v in feeds.items()}  # more padding, pad id 0
    with torch.inference_mode():
        batch, tokens = torch_decode(module, spec, feeds)
        torch.testing.assert_close(torch_decode(module, spec, wider, tokens)[0], batch, atol=1e-5, rtol=0)
        for i, n in enumerate(LENGTHS):
            alone = {k: v[i : i + 1, :n] for k, v in feeds.items()}
            logits, _ = torch_decode(module, spec, alone, tokens[i : i + 1])
            torch.testing.assert_close(logits[0], batch[i], atol=1e-5, rtol=0)
        decoder_ids = torch.cat([torch.full((3, 1), spec.bos_id), tokens[:, :-1]], dim=1)
        padded = decoder_ids.masked_fill(torch.arange(STEPS) >= torch.tensor([[5], [8], [3]]), spec.pad_id)
        full = module(feeds["input_ids"], feeds["attention_mask"], padded)  # right-padded targets too
        for i, t in enumerate([5, 8, 3]):
            torch.testing.assert_close(full[i, :t], batch[i, :t], atol=1e-4, rtol=0)


def fresh_rnn_decompositions() -> None:
    """torch 2.13: torch.onnx's dynamo export swaps in a while_loop LSTM/GRU decomposition (any source length)
    for each export, but the op's dispatch cache keeps the kernel the first export looked up, so a second
    RNN export in one process unrolls the loop and fixes the source length to the example's. Clearing the
    cache first makes each export behave as the first (run_dynamo should do the same)."""
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        op._dispatch_cache.clear()


def export_graph(graph, io, path: Path, method: str) -> None:
    """One graph to PATH the way the torch exporter does with METHOD."""
    from toolchain.export.torch_export import finish_graph, run_dynamo, run_torchscript

    example = io.example([3, 5])
    args = tuple(example[t.name] for t in io.inputs)
    if method == "dynamo":
        fresh_rnn_decompositions()
    {"dynamo": run_dynamo, "torchscript": run_torchscript}[method](graph, io, args, path, None)
    finish_graph(path, io, example)


@pytest.mark.parametrize("case, method", EXPORTED)
def test_both_graphs_export_and_onnxruntime_decodes_as_torch(case, method, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    module, spec = tiny(case)
    sessions = {}
    for name, (graph, io) in spec.graphs(module).items():
        export_graph(graph, io, tmp_path / f"{name}.onnx", method)
        sessions[name] = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    assert not any(m.training for m in module.modules())  # exporting leaves the module in eval mode

    def run_ort(name: str, feeds: dict) -> dict:
        outputs = [o.name for o in sessions[name].get_outputs()]
        values = sessions[name].run(outputs, {k: v.numpy() for k, v in feeds.items()})
        return {k: torch.from_numpy(v) for k, v in zip(outputs, values)}

    feeds = spec.encoder.example([4, 7])  # a source width other than the example's
    with torch.inference_mode():
        expected, tokens = torch_decode(module, spec, feeds)
    encoded = run_ort("encoder", feeds)
    assert sorted(encoded) == sorted(t.name for t in spec.encoder.outputs)
    got, _ = decode(lambda f: run_ort("decoder", f), spec, encoded, feeds["attention_mask"], tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("entry, config, words", [
    (LSTM, {**TINY_LSTM, "heads": 2}, "unknown LSTM seq2seq key 'heads'"),
    (LSTM, {**TINY_LSTM, "attention": "bahdanau"}, "attention = 'bahdanau'"),
    (TRANSFORMER, {**TINY_TRANSFORMER, "hidden": 8}, "unknown Transformer seq2seq key 'hidden'"),
    (TRANSFORMER, {**TINY_TRANSFORMER, "heads": 3}, "multiple of heads"),
])
def test_a_bad_config_is_one_sentence(entry, config, words):
    with pytest.raises(SourceError, match=words) as caught:
        build_module(entry, config)
    assert "\n" not in str(caught.value)
