"""Toy encoder-decoder graphs (onnx.helper) that keep runtime/seq2seq_io.py's contract, with outputs known in
advance, and the artifact directories the Translator loads them from.

- ``copy_graphs``: an LSTM-like fixed-size state. The encoder's ``past.h`` (batch, WIDTH+1) is the last
  token fed (BOS) followed by the source queue (padding read as EOS); each step emits the queue's head and
  shifts it. Output: the source, in order.
- ``reverse_graphs``: a growing cache ``past.k`` (batch, 2, past_sequence) that stores [1, token fed] per
  step, plus a non-state encoder output ``memory``. The step index is read from the cache's *contents*
  (the sum of its ones) and the source length from ``encoder_attention_mask``. Output: the source reversed.
- ``bigram_graphs``: a model whose next-token log-probabilities are a table row picked by the token fed;
  its state ``past.s`` (batch, 1) holds the token fed on the step before, and a token whose recorded
  predecessor (PRED) differs from it scores BAD (a wrong beam reorder shows as "?").

Copy and reverse also check the token fed: a wrong one makes the step emit "?".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from toolchain.runtime.variants import Component

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 ?"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS, UNK = 0, 1, 2, 3
VOCAB = {**{t: i for i, t in enumerate(SPECIALS)}, **{c: i + len(SPECIALS) for i, c in enumerate(CHARS)}}
V = len(VOCAB)
BAD = VOCAB["?"]
WIDTH = 16  # the copy toy's queue: at least the artifact's max_length
OPSET, IR = 17, 9


def tok(c: str) -> int:
    return VOCAB[c]


def tokenizer():
    """A character-level WordLevel tokenizer; encoding appends </s>, decoding joins the characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    t = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    t.decoder = decoders.Fuse()
    t.add_special_tokens(SPECIALS)
    t.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return t


def _c(name: str, value, dtype=None) -> onnx.NodeProto:
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name))


def _io(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, elem, dims)


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    m = h.make_model(h.make_graph(nodes, "toy", inputs, outputs, list(inits)),
                     opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR)
    onnx.checker.check_model(m)
    return m


SOURCE_IN = [_io("input_ids", T.INT64, ["batch", "source"]), _io("attention_mask", T.INT64, ["batch", "source"])]
STEP_IN = [_io("input_ids", T.INT64, ["batch", 1]), _io("encoder_attention_mask", T.INT64, ["batch", "source"])]
LOGITS = _io("logits", T.FLOAT, ["batch", V])


def _queue(out: str) -> list[onnx.NodeProto]:
    """The source with its padding read as EOS (int64, batch x source)."""
    return [_c("eos", EOS, np.int64), h.make_node("Cast", ["attention_mask"], ["m_bool"], to=T.BOOL),
            h.make_node("Where", ["m_bool", "input_ids", "eos"], [out])]


def _one_hot_checked(token: str, expected_prev: str) -> list[onnx.NodeProto]:
    """logits = 10 * one_hot(TOKEN if the token fed equals EXPECTED_PREV else BAD)."""
    return [_c("bad", [BAD], np.int64), _c("depth", V, np.int64), _c("onoff", [0.0, 10.0], np.float32),
            h.make_node("Squeeze", ["input_ids", "ax1"], ["fed"]),
            h.make_node("Equal", ["fed", expected_prev], ["fed_ok"]),
            h.make_node("Where", ["fed_ok", token, "bad"], ["emit"]),
            h.make_node("OneHot", ["emit", "depth", "onoff"], ["logits"], axis=-1)]


def copy_graphs() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """LSTM-like: past.h (batch, WIDTH+1) float = [last token fed, queue...]; emits the queue's head."""
    enc = [*_queue("q"), _c("bos_col", [[float(BOS)]], np.float32), _c("zero", [0], np.int64),
           h.make_node("Cast", ["q"], ["qf"], to=T.FLOAT), h.make_node("Shape", ["qf"], ["qs"]),
           h.make_node("Slice", ["qs", "zero", "one"], ["b"]), _c("one", [1], np.int64),
           h.make_node("Concat", ["b", "one"], ["b1"], axis=0), h.make_node("Expand", ["bos_col", "b1"], ["bos"]),
           h.make_node("Concat", ["bos", "qf"], ["hq"], axis=1), h.make_node("Shape", ["hq"], ["hs"]),
           h.make_node("Slice", ["hs", "one", "two"], ["w"]), _c("two", [2], np.int64),
           _c("full", [WIDTH + 1], np.int64), h.make_node("Sub", ["full", "w"], ["room"]),
           h.make_node("Concat", ["zero", "zero", "zero", "room"], ["pads"], axis=0),
           _c("eosf", float(EOS), np.float32), h.make_node("Pad", ["hq", "pads", "eosf"], ["past.h"])]
    enc = sorted(enc, key=lambda n: n.op_type != "Constant")  # constants first: the graph is topologically sorted
    encoder = _model(enc, SOURCE_IN, [_io("past.h", T.FLOAT, ["batch", WIDTH + 1])])
    state = [_io("past.h", T.FLOAT, ["batch", WIDTH + 1])]
    dec = [_c("ax1", [1], np.int64), _c("s0", [0], np.int64), _c("s1", [1], np.int64), _c("s2", [2], np.int64),
           _c("end", [WIDTH + 1], np.int64), _c("eos_col", [[float(EOS)]], np.float32),
           h.make_node("Cast", ["past.h"], ["hi"], to=T.INT64),
           h.make_node("Slice", ["hi", "s0", "s1", "ax1"], ["last2"]),
           h.make_node("Squeeze", ["last2", "ax1"], ["last"]),
           h.make_node("Slice", ["hi", "s1", "s2", "ax1"], ["head2"]),
           h.make_node("Squeeze", ["head2", "ax1"], ["head"]),
           *_one_hot_checked("head", "last"),
           h.make_node("Slice", ["past.h", "s1", "end", "ax1"], ["rest"]), h.make_node("Shape", ["past.h"], ["ps"]),
           h.make_node("Slice", ["ps", "s0", "s1"], ["b"]), h.make_node("Concat", ["b", "s1"], ["b1"], axis=0),
           h.make_node("Expand", ["eos_col", "b1"], ["tail"]),
           h.make_node("Concat", ["rest", "tail"], ["present.h"], axis=1)]
    dec = sorted(dec, key=lambda n: n.op_type != "Constant")
    decoder = _model(dec, STEP_IN + state, [LOGITS, _io("present.h", T.FLOAT, ["batch", WIDTH + 1])])
    return encoder, decoder


def reverse_graphs() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A growing cache past.k (batch, 2, past_sequence) and memory (batch, source); emits the source reversed."""
    enc = [*_queue("q"), h.make_node("Cast", ["q"], ["memory"], to=T.FLOAT)]
    encoder = _model(enc, SOURCE_IN, [_io("memory", T.FLOAT, ["batch", "source"])])
    inputs = STEP_IN + [_io("memory", T.FLOAT, ["batch", "source"]),
                        _io("past.k", T.FLOAT, ["batch", 2, "past_sequence"])]
    dec = [_c("ax1", [1], np.int64), _c("ax2", [2], np.int64), _c("s0", [0], np.int64), _c("s1", [1], np.int64),
           _c("two", 2.0, np.float32), _c("zf", 0.0, np.float32), _c("onef", 1.0, np.float32),
           _c("eos1", [EOS], np.int64), _c("bos1", [BOS], np.int64), _c("ones_col", [[1.0]], np.float32),
           # n: steps so far, from the cache's contents; pos = length - 2 - n (the source without its </s>)
           h.make_node("Slice", ["past.k", "s0", "s1", "ax1"], ["k0"]),
           h.make_node("ReduceSum", ["k0", "ax2"], ["n2"], keepdims=0), h.make_node("Squeeze", ["n2", "ax1"], ["n"]),
           h.make_node("Cast", ["encoder_attention_mask"], ["mf"], to=T.FLOAT),
           h.make_node("ReduceSum", ["mf", "ax1"], ["length"], keepdims=0),
           h.make_node("Sub", ["length", "two"], ["l2"]), h.make_node("Sub", ["l2", "n"], ["pos"]),
           h.make_node("Less", ["pos", "zf"], ["past_end"]),
           h.make_node("Max", ["pos", "zf"], ["posc"]), h.make_node("Add", ["pos", "onef"], ["pos1"]),
           h.make_node("Max", ["pos1", "zf"], ["pos1c"]),
           h.make_node("Cast", ["posc"], ["pi"], to=T.INT64), h.make_node("Unsqueeze", ["pi", "ax1"], ["pi2"]),
           h.make_node("Cast", ["pos1c"], ["pj"], to=T.INT64), h.make_node("Unsqueeze", ["pj", "ax1"], ["pj2"]),
           h.make_node("GatherElements", ["memory", "pi2"], ["v2"], axis=1),
           h.make_node("GatherElements", ["memory", "pj2"], ["w2"], axis=1),
           h.make_node("Squeeze", ["v2", "ax1"], ["vf"]), h.make_node("Cast", ["vf"], ["v"], to=T.INT64),
           h.make_node("Squeeze", ["w2", "ax1"], ["wf"]), h.make_node("Cast", ["wf"], ["w"], to=T.INT64),
           h.make_node("Where", ["past_end", "eos1", "v"], ["token"]),
           h.make_node("Equal", ["n", "zf"], ["first"]),
           h.make_node("Where", ["first", "bos1", "w"], ["expected"]),
           *_one_hot_checked("token", "expected"),
           h.make_node("Cast", ["input_ids"], ["fedf"], to=T.FLOAT), h.make_node("Shape", ["input_ids"], ["is"]),
           h.make_node("Expand", ["ones_col", "is"], ["ones"]),
           h.make_node("Concat", ["ones", "fedf"], ["new2"], axis=1),
           h.make_node("Unsqueeze", ["new2", "ax2"], ["new"]),
           h.make_node("Concat", ["past.k", "new"], ["present.k"], axis=2)]
    dec = sorted(dec, key=lambda n: n.op_type != "Constant")
    outputs = [LOGITS, _io("present.k", T.FLOAT, ["batch", 2, "past_sequence + 1"])]
    return encoder, _model(dec, inputs, outputs)


def bigram_graphs(table: np.ndarray, pred: np.ndarray) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """logits = TABLE[token fed] (V, V), or one_hot(BAD) where PRED[token fed] (-1: any) is not the token fed
    the step before (kept in past.s, which the encoder starts at -1)."""
    enc = [h.make_node("ReduceSum", ["attention_mask", "ax1"], ["mn"], keepdims=1), _c("ax1", [1], np.int64),
           h.make_node("Cast", ["mn"], ["mnf"], to=T.FLOAT), _c("zero", 0.0, np.float32), _c("m1", -1.0, np.float32),
           h.make_node("Mul", ["mnf", "zero"], ["z"]), h.make_node("Add", ["z", "m1"], ["past.s"])]
    enc = sorted(enc, key=lambda n: n.op_type != "Constant")
    encoder = _model(enc, SOURCE_IN, [_io("past.s", T.FLOAT, ["batch", 1])])
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(pred.astype(np.int64), "pred")]
    dec = [_c("ax1", [1], np.int64), _c("any", -1, np.int64), _c("bad_row", np.eye(V, dtype=np.float32)[BAD] * 50),
           h.make_node("Squeeze", ["input_ids", "ax1"], ["fed"]),
           h.make_node("Gather", ["table", "fed"], ["rows"], axis=0),
           h.make_node("Gather", ["pred", "fed"], ["want"], axis=0),
           h.make_node("Cast", ["past.s"], ["s2"], to=T.INT64), h.make_node("Squeeze", ["s2", "ax1"], ["before"]),
           h.make_node("Equal", ["want", "before"], ["same"]), h.make_node("Equal", ["want", "any"], ["free"]),
           h.make_node("Or", ["same", "free"], ["ok"]), h.make_node("Unsqueeze", ["ok", "ax1"], ["ok2"]),
           h.make_node("Where", ["ok2", "rows", "bad_row"], ["logits"]),
           h.make_node("Cast", ["input_ids"], ["present.s"], to=T.FLOAT)]
    dec = sorted(dec, key=lambda n: n.op_type != "Constant")
    state = _io("past.s", T.FLOAT, ["batch", 1])
    return encoder, _model(dec, STEP_IN + [state], [LOGITS, _io("present.s", T.FLOAT, ["batch", 1])], inits)


def chain_table(paths: dict[str, float], rest: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """A bigram table from PATHS {"ab": p} (after token a, token b with probability p; '$' is EOS, '^' the
    start) as log-probabilities, every other next token REST; PRED[b] = a when b follows only a."""
    probs = np.full((V, V), rest)
    ids, before = {"^": BOS, "$": EOS}, {}
    for pair, p in paths.items():
        a, b = (ids.get(c, VOCAB.get(c)) for c in pair)
        probs[a, b] = p
        before.setdefault(b, set()).add(a)
    pred = np.array([next(iter(before[b])) if len(before.get(b, ())) == 1 and b != EOS else -1 for b in range(V)])
    probs /= probs.sum(axis=1, keepdims=True)
    return np.log(probs), pred


def bigram_score(table: np.ndarray, ids: list[int], max_new: int, penalty: float) -> float:
    """The model's own score of decoded IDS (without EOS): sum of log-probabilities / length ** penalty, the
    EOS counted when the sequence ended before MAX_NEW."""
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    seq = [*ids, EOS] if len(ids) < max_new else list(ids)
    prev, total = BOS, 0.0
    for t in seq:
        total += float(logp[prev, t])
        prev = t
    return total / len(seq) ** penalty


def write_artifact(root: Path, encoder: onnx.ModelProto, decoder: onnx.ModelProto, max_length: int = 12,
                   eos: tuple[int, ...] = (EOS,)) -> Path:
    """A text2text-generation artifact dir: encoder.onnx, decoder.onnx, tokenizer.json, a schema-v2 manifest."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(encoder, str(root / "encoder.onnx"))
    onnx.save(decoder, str(root / "decoder.onnx"))
    tokenizer().save(str(root / "tokenizer.json"))
    components = {"encoder": Component.of(root, "encoder.onnx").to_dict(),
                  "decoder": Component.of(root, "decoder.onnx").to_dict()}
    manifest = {
        "schema_version": 2, "task": "text2text-generation", "max_length": max_length, "labels": None,
        "tokenizer": {"file": "tokenizer.json", "pad_id": PAD, "pad_token": "<pad>"},
        "inputs": [{"name": "input_ids", "dtype": "int64", "dims": ["batch", "source"]},
                   {"name": "attention_mask", "dtype": "int64", "dims": ["batch", "source"]}],
        "outputs": [{"name": "logits", "dtype": "float32", "dims": ["batch", V]}],
        "opset": OPSET, "exporter": "torch",
        "generation": {"eos_token_ids": list(eos), "bos_token_id": BOS, "padding_side": "right"},
        "variants": {"fp32": {"components": components, "precision": "fp32", "passed": True}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root


def write_classifier(root: Path) -> Path:
    """A single-graph text-classification artifact (logits = [sum of the mask, 0]) with the same tokenizer."""
    root.mkdir(parents=True, exist_ok=True)
    nodes = [_c("ax1", [1], np.int64), h.make_node("Cast", ["attention_mask"], ["mf"], to=T.FLOAT),
             h.make_node("ReduceSum", ["mf", "ax1"], ["n"], keepdims=1), h.make_node("Mul", ["n", "zero"], ["z"]),
             _c("zero", 0.0, np.float32), h.make_node("Concat", ["n", "z"], ["logits"], axis=1)]
    nodes = sorted(nodes, key=lambda n: n.op_type != "Constant")
    model = _model(nodes, SOURCE_IN, [_io("logits", T.FLOAT, ["batch", 2])])
    onnx.save(model, str(root / "model.onnx"))
    tokenizer().save(str(root / "tokenizer.json"))
    manifest = {
        "schema_version": 2, "task": "text-classification", "max_length": 12, "labels": ["short", "other"],
        "tokenizer": {"file": "tokenizer.json", "pad_id": PAD, "pad_token": "<pad>"},
        "inputs": [{"name": "input_ids", "dtype": "int64", "dims": ["batch", "sequence"]},
                   {"name": "attention_mask", "dtype": "int64", "dims": ["batch", "sequence"]}],
        "outputs": [{"name": "logits", "dtype": "float32", "dims": ["batch", 2]}],
        "variants": {"fp32": {"components": {"model": Component.of(root, "model.onnx").to_dict()},
                              "precision": "fp32", "passed": True}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root
