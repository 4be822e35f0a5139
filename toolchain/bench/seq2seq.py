"""Bench for encoder-decoders (text2text-generation): greedy ``translate()`` of a fixed set of sources at
several batch sizes, against PyTorch greedy decoding on the same weights and, for Hugging Face sources,
optimum's ``ORTModelForSeq2SeqLM``. Called by ``bench()`` for artifacts whose runtime method is translate.

Every engine runs in its own spawned child (harness.in_child) with the same sources, the same
``max_new_tokens`` and the same thread count, and times texts in -> texts out (tokenizing and detokenizing
included). One timed call translates ``batch`` sources; at batch 1 its latency is the time per sentence
(the reference shape). Output tokens are counted exactly per engine: the runtime's ``decode_ids`` on
``source_ids`` (what ``translate()`` decodes), the PyTorch loops' own ids, generate()'s sequences cut at EOS.

Baselines by source kind: a custom module (``source.kind == "module"``) is rebuilt from its module dir and
decoded twice, with its own forward over the whole prefix at each step (``greedy_uncached``, the reference
the export's parity uses: row ``pytorch``) and with its cached step graphs ``encoder_graph`` /
``decoder_graph`` in torch, as the exported graphs run (row ``pytorch-cached``); a transformers source runs
``generate()`` greedy with its KV cache (row ``pytorch``) and optimum's own export (row ``optimum``).
Nothing here imports torch at module level: only the children do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import toolchain.bench.cuda as cuda_bench
import toolchain.bench.harness as harness
from toolchain.runtime.manifest import Manifest
from toolchain.runtime.seq2seq_io import (BATCH_AXIS, LOGITS, MEMORY_MASK, PAST, PAST_AXIS, SOURCE_IDS, SOURCE_MASK,
                                          STEP_IDS, present_name)

# Dates and amounts, as models/data/dates writes them: short and long, words and digits.
SOURCES = (
    "the twenty-fifth of November, 2026",
    "Nov 25 '26",
    "one thousand two hundred and five",
    "Tue, Feb 17, 2004",
    "08/24/1982 (us)",
    "seven hundred seventy thousand six hundred six",
    "MON, APR 15, 1963",
    "23,004",
)
NEW_TOKENS = 32  # max_new_tokens for every engine (cut to the artifact's max_length)
BASELINES = ("pytorch", "pytorch-cached", "optimum")
LABELS = {
    ("pytorch", "module"): "pytorch (uncached forward per step)",
    ("pytorch-cached", "module"): "pytorch (cached step graphs)",
    ("pytorch", "transformers"): "pytorch (transformers generate, KV cache)",
    ("optimum", "transformers"): "optimum ORTModelForSeq2SeqLM (its own export, KV cache)",
}


def new_tokens(manifest: Manifest) -> int:
    """max_new_tokens of every engine's greedy decoding for this artifact."""
    return max(1, min(NEW_TOKENS, manifest.max_length))


def source_groups(batch: int) -> list[list[str]]:
    """SOURCES in calls of BATCH sources, cycling through them, so one pass covers each source at least once."""
    n = len(SOURCES)
    return [[SOURCES[(k * batch + i) % n] for i in range(batch)] for k in range(-(-n // batch))]


def _measure(job: dict[str, Any], run: Callable[[list[str]], tuple[list[str], int]]) -> dict[str, Any]:
    """Time RUN (sources -> (texts, output tokens)) on every group of each batch size: one untimed pass (the
    warm-up, and the outputs and token count: greedy decoding gives the same each pass), then job["runs"]."""
    out = {}
    for batch in job["batches"]:
        groups = source_groups(batch)
        texts, tokens = [], 0
        for group in groups:
            done, n = run(group)
            texts += done
            tokens += n
        ms = []
        for _ in range(job["runs"]):
            for group in groups:
                start = time.perf_counter()
                run(group)
                ms.append((time.perf_counter() - start) * 1000)
        out[batch] = {"ms": ms, "tokens": tokens, "sentences": len(texts), "outputs": texts[: len(SOURCES)]}
    return {"batches": out, "peak_rss_mb": harness.peak_rss_mb()}


# -- the children (spawned; each imports what it runs) ---------------------------------------------------
def onnx_child(job: dict[str, Any]) -> dict[str, Any]:
    """The torch-free runtime's greedy translate() of one variant."""
    from toolchain.runtime import load

    model = load(job["root"], variant=job["variant"], provider=job["provider"], threads=job["threads"],
                 batch_size=max(job["batches"]), cuda=job.get("cuda"))
    new = job["new_tokens"]
    counts = {}
    for batch in job["batches"]:
        for group in source_groups(batch):
            ids, mask = model.source_ids(group)
            counts[tuple(group)] = sum(len(row) for row in model.decode_ids(ids, mask, max_new_tokens=new))
    return _measure(job, lambda group: (model.translate(group, max_new_tokens=new), counts[tuple(group)]))


def _torch(job: dict[str, Any]) -> tuple[Any, str]:
    """torch with the bench's thread count, and the device for the provider (new tensors made there)."""
    import torch

    torch.set_num_threads(job["threads"])
    device = cuda_bench.torch_device(torch, job)
    if device != "cpu":
        torch.set_default_device(device)  # greedy_uncached and pad_sources make their tensors on the default
    return torch, device


def module_child(job: dict[str, Any]) -> dict[str, Any]:
    """A custom module rebuilt from its module dir, decoded greedily: job["mode"] "uncached" (its forward
    over the whole prefix per step) or "cached" (its encoder_graph once, its decoder_graph per token)."""
    from tokenizers import Tokenizer

    from toolchain.export.modules import TOKENIZER_FILE, read_module_dir
    from toolchain.export.seq2seq_module import greedy_uncached, pad_sources

    _, device = _torch(job)
    source = read_module_dir(job["source"])
    module, spec = source.build()
    module.to(device)
    tok = Tokenizer.from_file(str(Path(job["source"]) / TOKENIZER_FILE))
    tok.no_padding()
    tok.enable_truncation(max_length=job["max_length"])
    decode = greedy_uncached if job["mode"] == "uncached" else greedy_cached

    def run(group: list[str]) -> tuple[list[str], int]:
        ids, mask = pad_sources([e.ids for e in tok.encode_batch(group, add_special_tokens=True)], source.pad_id)
        rows = decode(module, spec, ids, mask, job["new_tokens"])
        return tok.decode_batch(rows, skip_special_tokens=True), sum(len(r) for r in rows)

    return _measure(job, run)


def greedy_cached(module: Any, spec: Any, ids: Any, mask: Any, max_new_tokens: int) -> list[list[int]]:
    """Greedy output ids per row (no start token, cut before EOS) with the module's own step graphs in torch,
    as the exported graphs run (runtime/seq2seq_io.py): the encoder once, then one decoder step per token
    carrying the ``past.*`` states; the first step's missing states are empty on their past_sequence axis."""
    import torch

    batch = ids.shape[0]
    with torch.inference_mode():
        encoded = module.encoder_graph(*[{SOURCE_IDS: ids, SOURCE_MASK: mask}[t.name] for t in spec.encoder.inputs])
        encoded = (encoded,) if isinstance(encoded, torch.Tensor) else encoded
        feeds = dict(zip((t.name for t in spec.encoder.outputs), encoded))
        state = {n: feeds.pop(n) for n in list(feeds) if n.startswith(PAST)}
        state.update(_empty_states(spec, batch, state, torch))
        feeds[MEMORY_MASK] = mask
        step, names = module.decoder_graph, [t.name for t in spec.decoder.outputs]
        token = torch.full((batch, 1), spec.bos_id, dtype=torch.int64)
        done = torch.zeros(batch, dtype=torch.bool)
        rows = []
        for _ in range(max_new_tokens):
            inputs = {**feeds, **state, STEP_IDS: token}
            out = dict(zip(names, step(*[inputs[t.name] for t in spec.decoder.inputs])))
            nxt = torch.where(done, torch.full_like(done, spec.pad_id, dtype=torch.int64), out[LOGITS].argmax(-1))
            rows.append(nxt)
            state = {n: out[present_name(n)] for n in state}
            done |= nxt == spec.eos_id
            if bool(done.all()):
                break
            token = nxt[:, None]
    return [row[: row.index(spec.eos_id)] if spec.eos_id in row else row for row in torch.stack(rows, 1).tolist()]


def _empty_states(spec: Any, batch: int, have: dict[str, Any], torch: Any) -> dict[str, Any]:
    """Zeros for every decoder ``past.*`` input the encoder does not give: the example's shape with the batch
    axis set to BATCH and the past_sequence axis to 0 (an empty self-attention cache)."""
    example = spec.decoder.example([1])
    out = {}
    for t in spec.decoder.inputs:
        if t.name.startswith(PAST) and t.name not in have:
            shape = list(example[t.name].shape)
            for axis, name in t.dynamic.items():
                shape[axis] = {BATCH_AXIS: batch, PAST_AXIS: 0}.get(name, shape[axis])
            out[t.name] = torch.zeros(shape, dtype=getattr(torch, t.dtype))
    return out


def hf_child(job: dict[str, Any]) -> dict[str, Any]:
    """transformers' AutoModelForSeq2SeqLM.generate() on the source weights, greedy, with its KV cache."""
    import transformers

    torch, device = _torch(job)
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(job["source"]).eval().to(device)
    return _measure(job, _generate_run(model, tok, job, torch, device))


def optimum_child(job: dict[str, Any]) -> dict[str, Any]:
    """optimum's ORTModelForSeq2SeqLM, exported by optimum from the same source dir, greedy generate()."""
    import logging
    import tempfile
    import warnings

    import onnxruntime as ort
    import transformers
    from optimum.onnxruntime import ORTModelForSeq2SeqLM
    from optimum.utils import logging as optimum_logging

    torch, _ = _torch(job)
    transformers.logging.set_verbosity_error()  # the export's tracer warnings and file-name notices are not ours
    optimum_logging.set_verbosity(logging.ERROR)
    options = ort.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    provider = "CUDAExecutionProvider" if job["provider"] == "cuda" else "CPUExecutionProvider"
    tok = transformers.AutoTokenizer.from_pretrained(job["source"])
    with tempfile.TemporaryDirectory(prefix="bench-optimum-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ORTModelForSeq2SeqLM.from_pretrained(job["source"], export=True).save_pretrained(tmp)
        model = ORTModelForSeq2SeqLM.from_pretrained(tmp, provider=provider, session_options=options)
        device = "cuda" if job["provider"] == "cuda" else "cpu"
        return _measure(job, _generate_run(model, tok, job, torch, device))


def _generate_run(model: Any, tok: Any, job: dict[str, Any], torch: Any, device: str) -> Callable:
    """RUN for _measure: generate() greedy (do_sample=False, num_beams=1, use_cache=True) of right-padded sources."""
    config = getattr(model, "generation_config", None) or model.config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]

    def run(group: list[str]) -> tuple[list[str], int]:
        enc = tok(group, return_tensors="pt", padding=True, truncation=True, max_length=job["max_length"])
        with torch.inference_mode():
            out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                 do_sample=False, num_beams=1, max_new_tokens=job["new_tokens"], use_cache=True)
        rows = generated_ids(out.tolist(), eos)
        return tok.batch_decode(rows, skip_special_tokens=True), sum(len(r) for r in rows)

    return run


def generated_ids(sequences: list[list[int]], eos: list[int]) -> list[list[int]]:
    """generate()'s sequences without the decoder start token, each cut before its first EOS (as decode_ids)."""
    rows = []
    for seq in sequences:
        new = seq[1:]
        rows.append(new[: next((i for i, t in enumerate(new) if t in eos), len(new))])
    return rows


# -- the parent: engines, rows, ratios ---------------------------------------------------------------
def _engines(manifest: Manifest, variants: list[str], vs_pytorch: bool) -> tuple[list[tuple], list[str]]:
    """(row name, child, extra job keys) per engine, the variants first; and notes on baselines left out."""
    engines: list[tuple[str, Callable, dict[str, Any]]] = [(n, onnx_child, {"variant": n}) for n in variants]
    source = manifest.source
    if not vs_pytorch:
        return engines, ["no baselines measured: pass --vs-pytorch (vs_pytorch=True) to compare with PyTorch greedy "
                         "decoding and optimum."]
    if not source.path or not Path(source.path).is_dir():
        where = source.path or source.model or "(none)"
        return engines, [f"no PyTorch baseline: the source {where} is not a directory on this machine; bench where "
                         "the model was exported, or pass vs_pytorch=False."]
    if source.kind == "module":
        return engines + [("pytorch", module_child, {"mode": "uncached"}),
                          ("pytorch-cached", module_child, {"mode": "cached"})], []
    return engines + [("pytorch", hf_child, {}), ("optimum", optimum_child, {})], []


def _row(manifest: Manifest, name: str, result: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One engine's row in bench()'s shape: one 'shape' per batch. p50/p95: ms per call of BATCH sources;
    sentences/s and ms per output token: over one pass through the sources, each call at its median over the
    runs (a slow call, a busy machine's hiccup, does not count against the pass)."""
    shapes = []
    for batch, r in result["batches"].items():
        calls = len(r["ms"]) // job["runs"]  # calls per pass: r["ms"] is run by run, call by call
        pass_ms = sum(float(np.median(r["ms"][g::calls])) for g in range(calls))
        shape = harness.shape_stats(int(batch), job["new_tokens"], r["ms"])
        shape.update(items_per_s=r["sentences"] * 1000 / pass_ms, sentences_per_s=r["sentences"] * 1000 / pass_ms,
                     ms_per_sentence=shape["p50_ms"] / int(batch), tokens=r["tokens"], sentences=r["sentences"],
                     tokens_per_sentence=r["tokens"] / r["sentences"],
                     ms_per_token=pass_ms / r["tokens"] if r["tokens"] else None,
                     tokens_per_s=r["tokens"] * 1000 / pass_ms)
        shapes.append(shape)
    v = manifest.variants.get(name)
    first = next(iter(result["batches"].values()))
    return {"engine": "onnxruntime" if v else name,
            "label": f"onnxruntime {v.precision}" if v else LABELS.get((name, manifest.source.kind), name),
            "precision": v.precision if v else "fp32", "bytes": v.bytes if v else 0, "passed": v.passed if v else True,
            "shapes": shapes, "real": None, "peak_rss_mb": result["peak_rss_mb"], "outputs": first["outputs"]}


def compare_engines(rows: dict[str, dict]) -> None:
    """Add to each variant's shapes ``speedup_vs_<baseline>``: the baseline's p50 / the variant's p50 at the same
    batch (above 1: the variant is faster), for pytorch, pytorch-cached and optimum where measured."""
    for name, row in rows.items():
        if name in BASELINES:
            continue
        for base in (b for b in BASELINES if b in rows):
            theirs = {s["batch"]: s["p50_ms"] for s in rows[base]["shapes"]}
            for mine in row["shapes"]:
                if mine["batch"] in theirs:
                    mine[f"speedup_vs_{base.replace('-', '_')}"] = theirs[mine["batch"]] / mine["p50_ms"]


def bench_translate(manifest: Manifest, variants: list[str], batches: tuple[int, ...], provider: str, runs: int,
                    threads: int, vs_pytorch: bool, progress=lambda m: None,
                    cuda: dict[str, Any] | None = None) -> tuple[dict[str, dict], list[str]]:
    """Rows per engine (variants, then baselines) and notes (baselines left out or failed, the labels)."""
    job = {"root": str(manifest.root), "provider": provider, "threads": threads, "runs": runs,
           "batches": list(batches), "new_tokens": new_tokens(manifest), "max_length": manifest.max_length,
           "source": manifest.source.path, "cuda": cuda}
    engines, notes = _engines(manifest, variants, vs_pytorch)
    rows = {}
    for name, child, extra in engines:
        progress(f"bench {name}: greedy translate() of {len(SOURCES)} sources, up to {job['new_tokens']} new tokens, "
                 f"at batch {', '.join(map(str, batches))}")
        try:
            result = harness.in_child(child, {**job, **extra})
        except Exception as exc:  # a baseline that fails is noted, the product's numbers are kept
            if child is onnx_child:
                raise
            notes.append(f"{name}: not measured ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]})")
            continue
        rows[name] = _row(manifest, name, result, job)
    compare_engines(rows)
    notes += [f"{n} = {r['label']}" for n, r in rows.items() if n in BASELINES]
    mine = rows[variants[0]]["outputs"]
    for name in (n for n in rows if n in BASELINES):
        differ = sum(a != b for a, b in zip(rows[name]["outputs"], mine))
        if differ:
            notes.append(f"{name}: {differ} of {len(mine)} outputs differ from {variants[0]}'s, so the output token "
                         "counts differ too: compare ms/tok as well as p50")
    return rows, notes


def report_fields(manifest: Manifest, batches: tuple[int, ...]) -> dict[str, Any]:
    """What a translate report adds to build_report's: the method, the reference shape (batch 1), the unit."""
    new = new_tokens(manifest)
    return {"method": "translate", "sources": list(SOURCES), "new_tokens": new,
            "reference_shape": {"batch": 1 if 1 in batches else min(batches), "seq": new},
            "unit": f"ms per translate() call of `batch` sources (greedy, up to {new} new tokens; at batch 1 ms per "
                    "sentence); items/s = sentences/s; seq = max new tokens"}


def format_table(report: dict) -> str:
    """The translate report as plain text: one line per engine and batch, then the labels and notes."""
    lines = [f"{report['artifact']} ({report['task']}): provider {report['provider']}, {report['threads']} threads, "
             f"{report['runs']} runs; greedy translate() of {len(report['sources'])} sources, up to "
             f"{report['new_tokens']} new tokens",
             f"{'engine':<15}{'MB':>7}{'peak MB':>8}{'batch':>6}{'p50 ms':>9}{'p95 ms':>9}{'sent/s':>9}{'tok/sent':>9}"
             f"{'ms/tok':>8}{'x torch':>9}{'x cached':>9}{'x optimum':>10}"]

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for name, row in report["rows"].items():
        for s in row["shapes"]:
            ratios = "".join(f"{fmt(s.get(f'speedup_vs_{b}'), '.2f') + ('x' if f'speedup_vs_{b}' in s else ''):>{w}}"
                             for b, w in (("pytorch", 9), ("pytorch_cached", 9), ("optimum", 10)))
            lines.append(f"{name:<15}{row['bytes'] / 1e6:>7.1f}{row['peak_rss_mb']:>8.0f}{s['batch']:>6}"
                         f"{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['sentences_per_s']:>9.1f}"
                         f"{s['tokens_per_sentence']:>9.1f}{fmt(s['ms_per_token'], '8.3f'):>8}{ratios}")
    lines.append("p50/p95: ms per translate() call of `batch` sources (at batch 1: per sentence); ms/tok: time per "
                 "output token; x <engine>: its p50 / this p50 at the same batch (above 1 is faster).")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
