"""The `toolchain` command: a thin layer that parses arguments and calls one stage function each.

User errors (ToolchainError, OSError, bad arguments) print one sentence on stderr and exit 2, with no
traceback unless --verbose is given; an unexpected exception prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from typing import Any, Callable

from toolchain.runtime.errors import ToolchainError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.rstrip(".")
        self.exit(EXIT_USER_ERROR, f"error: {message}; see `{self.prog} --help`.\n")

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def _say(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


@command
def cmd_export(args: argparse.Namespace) -> int:
    from toolchain.export.core import export

    manifest = export(args.model, args.out, task=args.task, opset=args.opset, atol=args.atol, progress=_say,
                      trust_remote_code=args.trust_remote_code, exporter=args.exporter)
    v = manifest["variants"]["fp32"]
    parity = v["metrics"]["parity"]
    print(
        f"exported {manifest['source']['model']} ({manifest['task']}) with {manifest.get('exporter', 'optimum')} to {args.out}: "
        f"{v['bytes'] / 1e6:.1f} MB, opset {manifest['opset']}, parity max diff {parity['max_abs_diff']:.2g} "
        f"<= {parity['atol']:g}, {manifest['export_seconds']:.1f} s"
    )
    return 0


@command
def cmd_validate(args: argparse.Namespace) -> int:
    from toolchain.variants.validate import validate

    checks = validate(args.dir, variants=args.variant or None, data=args.data, trust_remote_code=args.trust_remote_code)
    for c in checks:
        print(f"{c.variant}: {c.kind} ok: {c.summary}")
    print(f"all {len(checks)} variant(s) of {args.dir} pass (parity against PyTorch, or their gate against fp32)")
    return 0


def _print_embeddings(texts: list[str], vectors: Any) -> None:
    for text, vec in zip(texts, vectors):
        head = ", ".join(f"{x:+.4f}" for x in vec[:4])
        print(f"{text[:60]!r}: dim {len(vec)}, norm {float((vec ** 2).sum() ** 0.5):.3f}, [{head}, ...]")
    if len(texts) > 1:
        sims = vectors @ vectors.T
        print("cosine similarity:")
        for i, row in enumerate(sims):
            print(f"  [{i}] " + " ".join(f"{x:6.3f}" for x in row))


@command
def cmd_run(args: argparse.Namespace) -> int:
    from toolchain.runtime import load

    model = load(args.dir, variant=args.variant, provider=args.provider, cuda=_cuda_options(args))
    method = model.task.method
    if method == "generate":
        result = model.generate(args.texts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed)
    else:
        result = getattr(model, method)(args.texts)
    info = model.info()
    if args.json:
        payload = result.tolist() if hasattr(result, "tolist") else result
        print(json.dumps({"info": info, method: payload}, ensure_ascii=False))
        return 0
    PRINTERS[method](args.texts, result)
    print(f"variant {info['variant']} on {info['provider']}"
          + (f" ({info['placement']})" if info.get("provider") == "cuda" else ""), file=sys.stderr)
    return 0


def _print_labels(texts: list[str], results: list[dict[str, Any]]) -> None:
    for text, r in zip(texts, results):
        print(f"{text[:60]!r}: {r['label']} ({r['score']:.3f})")


def _print_continuations(prompts: list[str], results: list[str]) -> None:
    for prompt, text in zip(prompts, results):
        print(f"{prompt}{text}\n")


PRINTERS = {"embed": _print_embeddings, "classify": _print_labels, "generate": _print_continuations}


@command
def cmd_info(args: argparse.Namespace) -> int:
    from toolchain.runtime.manifest import read_manifest

    m = read_manifest(args.dir)
    for name in m.variants:  # a damaged artifact is refused here as load() refuses it (sha256, paths)
        m.verify(name)
    m.tokenizer_path()
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    d = m.data
    src = d.get("source", {})
    print(f"artifact   {m.root}")
    print(f"task       {m.task}" + (f"  labels: {', '.join(m.labels)}" if m.labels else ""))
    print(f"source     {src.get('model')} ({src.get('kind')}, {src.get('architecture')}), weights sha256 {str(src.get('weights_sha256'))[:12]}")
    print(f"exporter   {d.get('exporter', 'optimum')}" + (f" (fell back from {d['exporter_fallback']})" if d.get("exporter_fallback") else ""))
    print(f"opset      {d.get('opset')}   max length {m.max_length} tokens" + (f"   pooling {d['pooling']}" if d.get("pooling") else ""))
    for kind in ("inputs", "outputs"):
        print(f"{kind:<10} " + "; ".join(f"{i['name']} {i['dtype']} {i['dims']}" for i in d[kind]))
    print("variants")
    for v in m.variants.values():
        print(f"  {v.name:<12} {v.precision:<6} {v.bytes / 1e6:8.1f} MB  {'passed' if v.passed else 'FAILED':<6}  "
              f"{v.latency_summary():<38} {v.check_summary()}  {v.file}")
    if d.get("bench"):
        print("bench      " + "; ".join(f"{p}: {b.get('json')} {b.get('chart')} ({b.get('measured')})" for p, b in d["bench"].items()))
    versions = d.get("versions", {})
    print("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,8,32") from None


def _fraction(text: str) -> float:
    """--max-drop: a share in [0, 1), checked before any work is done."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share such as 0.01") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1); give a share such as 0.01")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give one from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number; give one from 1 to 65535")
    return value


@command
def cmd_quantize(args: argparse.Namespace) -> int:
    from toolchain.variants.quantize import quantize

    r = quantize(args.dir, args.mode, calib=args.calib, max_drop=args.max_drop, target=args.target,
                 limit=args.limit, progress=_say)
    share = r.bytes / r.fp32_bytes
    if r.passed:
        speed = f"; p50 {r.p50_ms:.2f} ms vs fp32 {r.fp32_p50_ms:.2f} ms ({r.p50_ms / r.fp32_p50_ms:.2f}x)"
        print(f"{r.variant}: passed its gate ({r.gate.summary}); {r.bytes / 1e6:.1f} MB = {share:.0%} of fp32"
              f"{speed}; plan: {r.plan}")
        return 0
    print(f"{r.variant}: FAILED its gate ({r.gate.summary}); kept in {args.dir} for inspection but never chosen by "
          f"variant='auto'; tried: " + "; ".join(t["plan"] for t in r.tried))
    return 1


@command
def cmd_optimize(args: argparse.Namespace) -> int:
    from toolchain.variants.optimize import optimize

    rows = optimize(args.dir, base=args.base, rewrites=args.rewrite, calib=args.calib, max_drop=args.max_drop,
                    progress=_say)
    for r in rows:
        print(f"{r['rewrite']}: {'kept as ' + r['variant'] if r['kept'] else 'dropped'} ({r['reason']})")
    kept = sum(r["kept"] for r in rows)
    print(f"{kept} of {len(rows)} rewrites kept")
    return 0


def _cuda_options(args: argparse.Namespace) -> dict[str, Any]:
    """--device-id and --gpu-mem-limit as CudaOptions fields (checked by CudaOptions, one sentence on error)."""
    given = {"device_id": args.device_id, "gpu_mem_limit": args.gpu_mem_limit}
    return {k: v for k, v in given.items() if v is not None}


def _add_cuda_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-id", type=int, default=None, help="CUDA: the GPU to use, as CUDA numbers them (default 0)")
    p.add_argument("--gpu-mem-limit", default=None, metavar="SIZE",
                   help="CUDA: most memory ONNX Runtime's arena may hold, e.g. 4GB or 512MiB (default: no limit)")


@command
def cmd_bench(args: argparse.Namespace) -> int:
    from toolchain.bench.core import bench, format_table

    report = bench(args.dir, variants=args.variants, batches=args.batch, seqs=args.seq, provider=args.provider,
                   vs_pytorch=args.vs_pytorch, real=not args.no_real, runs=args.runs, threads=args.threads,
                   json_path=args.json_out, progress=_say, cuda=_cuda_options(args))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


@command
def cmd_train(args: argparse.Namespace) -> int:
    from toolchain.train.trainer import train

    result = train(args.recipe, out=args.out, smoke=args.smoke, progress=_say)
    fine = result.metrics.get("finetune", {})
    pre = result.metrics.get("pretrain", {})
    parts = [f"trained model in {result.model_dir}"]
    if pre:
        parts.append(f"pretraining held-out MLM loss {pre['held_out_mlm_loss']:.3f} ({pre['train_seconds']:.0f} s)")
    if "dev_accuracy" in fine:
        parts.append(f"dev accuracy {fine['dev_accuracy']:.4f} ({fine['train_seconds']:.0f} s of training)")
    print("; ".join(parts))
    if fine.get("reached_min_accuracy") is False:
        print(f"below the recipe's min_accuracy {fine['min_accuracy']}", file=sys.stderr)
        return 1
    return 0


@command
def cmd_build(args: argparse.Namespace) -> int:
    from toolchain.pipeline.stages import build, format_summary

    summary = build(args.recipe, out=args.out, smoke=args.smoke, retrain=args.retrain, progress=_say)
    print(format_summary(summary))
    return 0 if summary["ok"] else 1


@command
def cmd_demo(args: argparse.Namespace) -> int:
    from toolchain.serve.app import demo

    demo(args.dirs, host=args.host, port=args.port, progress=_say)
    print("demo stopped")
    return 0


EXAMPLES = {
    "train": """\
        toolchain train models/minilm-sst2.toml
        toolchain train models/bert-mini-sst2.toml --smoke --out /tmp/smoke""",
    "build": """\
        toolchain build models/minilm.toml
        toolchain build models/minilm-sst2.toml --out dist/minilm-sst2""",
    "quantize": """\
        toolchain quantize dist/minilm --mode int8-dynamic
        toolchain quantize dist/minilm --mode int4 --calib my_sentences.txt --max-drop 0.01""",
    "optimize": "toolchain optimize dist/minilm",
    "bench": """\
        toolchain bench dist/minilm --vs-pytorch
        toolchain bench dist/minilm --variants fp32,int8 --batch 1,32 --seq 128 --json
        toolchain bench dist/minilm --provider cuda --device-id 0 --batch 32 --seq 128""",
    "export": """\
        toolchain export sentence-transformers/all-MiniLM-L6-v2 --out dist/minilm
        toolchain export ./my-finetuned-bert --task text-classification --out dist/sentiment""",
    "validate": "toolchain validate dist/minilm",
    "run": """\
        toolchain run dist/minilm "a cat sat on the mat" "a kitten rested on a rug"
        toolchain run dist/sentiment "great film" --json
        toolchain run dist/shakespeare-llama "ROMEO:" --max-new-tokens 80 --temperature 0.8""",
    "info": "toolchain info dist/minilm",
    "demo": """\
        toolchain demo                                  # dist/minilm, built first if missing
        toolchain demo dist/minilm dist/minilm-sst2 --port 7861
        toolchain demo dist/sentiment --host 0.0.0.0    # reachable from other machines""",
}


def build_parser() -> argparse.ArgumentParser:
    from toolchain.runtime.tasks import TASKS
    from toolchain.export.source import DEFAULT_MODEL

    parser = Parser(
        prog="toolchain",
        description="Export Transformer models to ONNX, check them against PyTorch, and run them without torch.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        epilog = "examples:\n" + textwrap.indent(textwrap.dedent(EXAMPLES[name]), "  ")
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # also after the command (toolchain info DIR --verbose); SUPPRESS keeps a --verbose given before it
        p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and library logs")
        return p

    p = add("export", "export a model to an ONNX artifact, checked against PyTorch")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"local model dir, sentence-transformers dir or hub id (default: {DEFAULT_MODEL}, bundled)")
    p.add_argument("--task", default="feature-extraction", choices=sorted(TASKS), help="optimum task name")
    p.add_argument("--out", required=True, help="artifact directory to write (replaced atomically)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's for the model)")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance against PyTorch (default: the task's)")
    p.add_argument("--exporter", default="auto", choices=["auto", "ort-genai", "optimum"],
                   help="graph writer; auto: ONNX Runtime GenAI's fused decoder graph where it handles the model "
                        "and passes parity, else optimum")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a model whose config.json maps to its own Python code (auto_map) run that code; "
                        "only for models whose authors you trust")

    p = add("validate", "re-run parity against PyTorch for every variant; exit non-zero on a miss")
    p.add_argument("dir")
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.add_argument("--data", help="texts for re-running quantized variants' gates (default: the data they were gated on)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a source model that maps to its own Python code run it for the PyTorch side of parity")

    p = add("run", "run an artifact on texts and print the results")
    p.add_argument("dir")
    p.add_argument("texts", nargs="+")
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    _add_cuda_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--max-new-tokens", type=int, default=64, help="text generation: tokens to add (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="text generation: 0 is greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="text generation: nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="text generation: seed for sampling")

    from toolchain.variants.hardware import PRESETS
    from toolchain.variants.quantize import MODES
    from toolchain.variants.optimize import REWRITES

    p = add("quantize", "add a quantized variant, gated against fp32 on real data")
    p.add_argument("dir")
    p.add_argument("--mode", required=True, choices=list(MODES))
    p.add_argument("--calib", help="texts for calibration and the gate: .txt (one per line) or .tsv/.csv "
                                   "with a sentence/text column and optional label (default: bundled SST-2 dev)")
    p.add_argument("--max-drop", type=_fraction, help="gate budget: 1 - mean cosine for embeddings (default 0.005; "
                                                  "min cosine may drop 4x that), accuracy drop for classifiers (0.01)")
    p.add_argument("--target", choices=list(PRESETS), help="quantization preset (default: detected from this CPU)")
    p.add_argument("--limit", type=int, default=512, help="use at most this many texts (default 512)")

    p = add("optimize", "try graph rewrites; keep those that pass the gate and are measurably faster here")
    p.add_argument("dir")
    p.add_argument("--rewrite", action="append", choices=list(REWRITES), help="only this rewrite (repeatable)")
    p.add_argument("--base", default="fp32", help="variant to rewrite (default fp32)")
    p.add_argument("--calib", help="texts for the gate (default: bundled SST-2 dev)")
    p.add_argument("--max-drop", type=_fraction, help="gate budget, a share in [0, 1) (default: the gate's)")

    p = add("bench", "latency, throughput, memory and size per variant; records results for variant='auto'")
    p.add_argument("dir")
    p.add_argument("--variants", type=lambda t: [x for x in t.split(",") if x], help="comma-separated (default all)")
    p.add_argument("--batch", type=_ints, default=(1, 8, 32), help="batch sizes, e.g. 1,8,32")
    p.add_argument("--seq", type=_ints, default=(16, 128), help="sequence lengths in tokens, e.g. 16,128")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    _add_cuda_arguments(p)
    p.add_argument("--vs-pytorch", action="store_true", help="measure PyTorch eager in the same run as the baseline")
    p.add_argument("--no-real", action="store_true", help="skip the real-sentences (batch 32, dynamic padding) scenario")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out", default=None, help="where to write the JSON report (default DIR/bench.json)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")

    p = add("train", "train or finetune a model from a recipe (models/*.toml); resumes an interrupted run")
    p.add_argument("recipe")
    p.add_argument("--out", help="trained model dir (default dist/NAME.model)")
    p.add_argument("--smoke", action="store_true", help="a few steps on a few examples, to check the recipe")

    p = add("build", "train -> export -> quantize -> validate -> bench, with one summary table")
    p.add_argument("recipe")
    p.add_argument("--out", help="artifact dir (default dist/NAME)")
    p.add_argument("--smoke", action="store_true", help="tiny training and bench, to check the pipeline")
    p.add_argument("--retrain", action="store_true", help="train even if a trained model is already there")

    p = add("info", "print an artifact's manifest readably")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    p = add("demo", "serve a Gradio app over artifacts: one tab per task, variant compare, model card")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="artifact directories (default: dist/minilm, built if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=None, help="port (default: the first free one from 7860)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already reported in one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verbose:
        _quiet()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except ToolchainError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # the reader went away (`toolchain info DIR | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint at exit
        return 0
    except OSError as exc:  # disk full, permissions, read-only paths
        if args.verbose:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check the path and free space.", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not a user error: still one line, the traceback on request
        if args.verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: unexpected {type(exc).__name__}" + (f" ({first})" if first else "")
              + "; re-run with --verbose for the traceback and report it.", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _quiet() -> None:
    """Silence the libraries' progress chatter and tracer warnings unless --verbose."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    try:  # ONNX Runtime's native log lines (a CUDA provider that fails to start): our error says it in one line
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
