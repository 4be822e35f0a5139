"""The `toolchain` argument parser: one table of commands, their options and their --help examples.

Argument errors are one line (no usage block) and exit EXIT_USER_ERROR, like every other user error.
"""

from __future__ import annotations

import argparse
import textwrap

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.rstrip(".")
        self.exit(EXIT_USER_ERROR, f"error: {message}; see `{self.prog} --help`.\n")


def ints(text: str) -> tuple[int, ...]:
    """--batch, --seq: a comma-separated list of integers."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,8,32") from None


def fraction(text: str) -> float:
    """--max-drop: a share in [0, 1), checked before any work is done."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share such as 0.01") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1); give a share such as 0.01")
    return value


def port(text: str) -> int:
    """--port: 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give one from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number; give one from 1 to 65535")
    return value


def add_cuda_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-id", type=int, default=None, help="CUDA: the GPU to use, as CUDA numbers them (default 0)")
    p.add_argument("--gpu-mem-limit", default=None, metavar="SIZE",
                   help="CUDA: most memory ONNX Runtime's arena may hold, e.g. 4GB or 512MiB (default: no limit)")


EXAMPLES = {
    "train": """\
        toolchain train models/minilm-sst2.toml
        toolchain train models/bert-mini-sst2.toml --smoke --out /tmp/smoke
        toolchain train models/minilm-sst2.toml --nproc 2        # DDP: 2 processes, same global batch
        toolchain train models/minilm-sst2.toml --nproc 4 --nnodes 2 --rdzv-endpoint head:29500  # on each node""",
    "build": """\
        toolchain build models/minilm.toml
        toolchain build models/minilm-sst2.toml --out dist/minilm-sst2""",
    "quantize": """\
        toolchain quantize dist/minilm --mode int8-dynamic
        toolchain quantize dist/minilm --mode int8-dynamic --target avx2 --explain
        toolchain quantize dist/minilm --mode int8-static --explain   # smoothed, static scales, QDQ
        toolchain quantize dist/minilm --mode int4 --calib my_sentences.txt --max-drop 0.01""",
    "optimize": "toolchain optimize dist/minilm",
    "bench": """\
        toolchain bench dist/minilm --vs-pytorch
        toolchain bench dist/minilm --variants fp32,int8 --batch 1,32 --seq 128 --json
        toolchain bench dist/minilm --provider cuda --device-id 0 --batch 32 --seq 128""",
    "export": """\
        toolchain export sentence-transformers/all-MiniLM-L6-v2 --out dist/minilm
        toolchain export ./my-finetuned-bert --task text-classification --out dist/sentiment
        toolchain export ./my-bloom --task feature-extraction --max-length 2048 --out dist/bloom-embed""",
    "validate": "toolchain validate dist/minilm",
    "run": """\
        toolchain run dist/minilm "a cat sat on the mat" "a kitten rested on a rug"
        toolchain run dist/sentiment "great film" --json
        toolchain run dist/shakespeare-llama "ROMEO:" --max-new-tokens 80 --temperature 0.8
        toolchain run dist/transformer-seq2seq "March 3, 2021" "Nov 25 '26" --beam-size 4
        toolchain run dist/shapes-vit models/data/shapes/images/test/00000.png photo.jpg""",
    "sweep": """\
        toolchain sweep models/shakespeare-llama.toml --sizes ladder --tokens 400k --budget-ms 2 --budget-mb 10
        toolchain sweep models/shakespeare-llama.toml --sizes "hidden=64,128,256;layers=2,4" --tokens 100k,200k,400k
        toolchain sweep models/transformer-cls-sst2.toml --sizes "d_model=32,64,128" --smoke""",
    "info": "toolchain info dist/minilm",
    "serve": """\
        toolchain serve dist/minilm                     # OpenAI-compatible API on http://127.0.0.1:8000/v1
        toolchain serve dist/minilm dist/shakespeare-llama --replicas 2 --port 8001
        toolchain serve dist/minilm --address auto --host 0.0.0.0   # on the Ray cluster this machine is in""",
    "map": """\
        toolchain map dist/minilm --input docs.txt --output docs.parquet
        toolchain map dist/minilm-sst2 --input reviews.jsonl --column review --output labels.parquet --address auto""",
    "demo": """\
        toolchain demo                                  # dist/minilm, built first if missing
        toolchain demo dist/minilm dist/minilm-sst2 --port 7861
        toolchain demo dist/sentiment --host 0.0.0.0    # reachable from other machines
        toolchain demo dist/minilm --web http://127.0.0.1:8000/   # link the card to its in-browser page""",
    "web": """\
        toolchain web dist/minilm --out site                       # the `auto` variant for CPU
        toolchain web dist/minilm dist/minilm-sst2 --out site --variant int8
        toolchain web dist/minilm --out site --serve --port 8000   # serve it on loopback, cross-origin isolated""",
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
                   help=f"local model dir, sentence-transformers dir, module dir (from `toolchain train` on a recipe "
                        f"with [model] module) or hub id (default: {DEFAULT_MODEL}, bundled)")
    p.add_argument("--task", default=None, choices=sorted(TASKS),
                   help="optimum task name (default: a module dir's own task, else feature-extraction)")
    p.add_argument("--out", required=True, help="artifact directory to write (replaced atomically)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's for the model)")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance against PyTorch (default: the task's)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="longest input in tokens, for models with no position table whose config and tokenizer "
                        "state none (ALiBi: BLOOM, MPT); recorded in the manifest (default: what the model states)")
    p.add_argument("--exporter", default="auto", choices=["auto", "ort-genai", "optimum", "torch"],
                   help="graph writer; auto: ONNX Runtime GenAI's fused decoder graph where it handles the model "
                        "and passes parity, else optimum; module dirs: torch (dynamo, else TorchScript)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a model whose config.json maps to its own Python code (auto_map) run that code; "
                        "only for models whose authors you trust")

    p = add("validate", "re-run parity against PyTorch for every variant; exit non-zero on a miss")
    p.add_argument("dir")
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.add_argument("--data", help="texts for re-running quantized variants' gates (default: the data they were gated on)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a source model that maps to its own Python code run it for the PyTorch side of parity")

    p = add("run", "run an artifact on texts (image files for image classifiers) and print the results")
    p.add_argument("dir")
    p.add_argument("texts", nargs="+", metavar="INPUT", help="texts, or image files for an image-classification artifact")
    p.add_argument("--variant", default="auto")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    add_cuda_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--max-new-tokens", type=int, default=64, help="text generation: tokens to add (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="text generation: 0 is greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="text generation: nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="text generation: seed for sampling")
    p.add_argument("--beam-size", type=int, default=1, help="translation: beams (1, the default, is greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="translation: beam scores are divided by length ** this (default 1.0)")

    from toolchain.variants.hardware import PRESETS
    from toolchain.variants.quantize import MODES
    from toolchain.variants.optimize import REWRITES

    p = add("quantize", "add a quantized variant, gated against fp32 on real data")
    p.add_argument("dir")
    p.add_argument("--mode", required=True, choices=list(MODES))
    p.add_argument("--calib", help="texts for calibration and the gate: .txt (one per line) or .tsv/.csv "
                                   "with a sentence/text column and optional label (default: bundled SST-2 dev)")
    p.add_argument("--max-drop", type=fraction, help="gate budget: 1 - mean cosine for embeddings (default 0.005; "
                                                  "min cosine may drop 4x that), accuracy drop for classifiers (0.01)")
    p.add_argument("--target", choices=list(PRESETS), help="quantization preset (default: detected from this CPU)")
    p.add_argument("--limit", type=int, default=512, help="use at most this many texts (default 512)")
    p.add_argument("--explain", action="store_true",
                   help="also print the sensitivity ranking of the layers and every plan tried, with its gate")

    p = add("optimize", "try graph rewrites; keep those that pass the gate and are measurably faster here")
    p.add_argument("dir")
    p.add_argument("--rewrite", action="append", choices=list(REWRITES), help="only this rewrite (repeatable)")
    p.add_argument("--base", default="fp32", help="variant to rewrite (default fp32)")
    p.add_argument("--calib", help="texts for the gate (default: bundled SST-2 dev)")
    p.add_argument("--max-drop", type=fraction, help="gate budget, a share in [0, 1) (default: the gate's)")

    p = add("bench", "latency, throughput, memory and size per variant; records results for variant='auto'")
    p.add_argument("dir")
    p.add_argument("--variants", type=lambda t: [x for x in t.split(",") if x], help="comma-separated (default all)")
    p.add_argument("--batch", type=ints, default=(1, 8, 32), help="batch sizes, e.g. 1,8,32")
    p.add_argument("--seq", type=ints, default=(16, 128), help="sequence lengths in tokens, e.g. 16,128")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    add_cuda_arguments(p)
    p.add_argument("--vs-pytorch", action="store_true", help="measure PyTorch eager in the same run as the baseline")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the PyTorch baseline import the artifact's own nn.Module code (a module dir whose entry "
                        "point is outside the toolchain); only for code whose authors you trust")
    p.add_argument("--no-real", action="store_true", help="skip the real-sentences (batch 32, dynamic padding) scenario")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out", default=None, help="where to write the JSON report (default DIR/bench.json)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")

    p = add("train", "train or finetune a model from a recipe (models/*.toml); resumes an interrupted run")
    p.add_argument("recipe")
    p.add_argument("--out", help="trained model dir (default dist/NAME.model)")
    p.add_argument("--smoke", action="store_true", help="a few steps on a few examples, to check the recipe")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train as N processes on this node with torchrun (DDP: gloo on CPU, NCCL on GPU); the "
                        "recipe's batch_size stays the global batch")
    p.add_argument("--nnodes", type=int, default=1, metavar="M", help="with --nproc: nodes taking part (default 1)")
    p.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="with --nnodes > 1: the rendezvous address every node gives (e.g. the first node:29500)")

    p = add("build", "train -> export -> quantize -> validate -> bench, with one summary table")
    p.add_argument("recipe")
    p.add_argument("--out", help="artifact dir (default dist/NAME)")
    p.add_argument("--smoke", action="store_true", help="tiny training and bench, to check the pipeline")
    p.add_argument("--retrain", action="store_true", help="train even if a trained model is already there")

    p = add("sweep", "train a family of sizes from one recipe: the scaling-law fit and what to ship for a budget")
    p.add_argument("recipe")
    p.add_argument("--sizes", required=True, metavar="SPEC",
                   help="a preset (ladder, smoke), HIDDENxLAYERS pairs (64x1,128x2) or a grid of config axes "
                        "(hidden=64,128;layers=1,2)")
    p.add_argument("--tokens", default=None, metavar="N[,N...]",
                   help="training budget per model in tokens, e.g. 400k; several give the data axis (default: "
                        "the recipe's schedule)")
    p.add_argument("--out", help="sweep directory (default dist/sweep-NAME); a rerun resumes at the first unfinished size")
    p.add_argument("--smoke", action="store_true", help="a few training steps and a short bench per size")
    p.add_argument("--set", action="append", default=None, metavar="train.KEY=VALUE", dest="schedule",
                   help="override a [train] setting for every size, e.g. train.batch_size=8 (repeatable)")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget at batch 1 for the recommendation")
    p.add_argument("--budget-mb", type=float, default=None, help="artifact size budget for the recommendation")

    p = add("info", "print an artifact's manifest readably")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    p = add("demo", "serve a Gradio app over artifacts: one tab per task, variant compare, model card")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="artifact directories (default: dist/minilm, built if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--web", default=None, metavar="URL",
                   help="a site served by `toolchain web --serve`: the model card links the artifacts it holds")

    p = add("web", "write a static site whose page runs the artifacts' models in the browser (onnxruntime-web)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="feature-extraction or text-classification artifacts")
    p.add_argument("--out", required=True, metavar="SITE", help="site directory to write (replaced atomically)")
    p.add_argument("--variant", default="auto", help="variant per artifact (default auto: what the runtime picks on CPU)")
    p.add_argument("--serve", action="store_true", help="then serve SITE on 127.0.0.1, with the headers for WASM threads")
    p.add_argument("--port", type=port, default=8000, help="--serve: port (default 8000)")

    p = add("serve", "serve artifacts on Ray Serve behind an OpenAI-compatible HTTP API (the serve extra)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="artifact directories; each is a model named after its directory")
    p.add_argument("--replicas", type=int, default=1, help="replicas per artifact (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8000, help="port (default 8000)")
    p.add_argument("--address", default=None, help="Ray cluster: auto (the one this machine is in) or ray://HOST:10001 "
                                                   "(default: a local Ray started here)")
    p.add_argument("--haproxy", action="store_true",
                   help="start the local Ray in Ray Serve's high-throughput mode (HAProxy ingress; about half the "
                        "CPU per request, measured); HAProxy also serves stats on *:8404 and metrics on *:9101")

    p = add("map", "run a file through an artifact on Ray Data (embed, classify, translate); Parquet out, order kept")
    p.add_argument("dir")
    p.add_argument("--input", required=True, help="a .txt (one text per line), .jsonl or .parquet file")
    p.add_argument("--output", required=True, help="the .parquet file to write (replaced atomically)")
    p.add_argument("--column", default="text", help="the column holding the texts (default text)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per model call (default 256)")
    p.add_argument("--address", default=None, help="Ray cluster: auto or ray://HOST:10001 (default: a local Ray)")
    return parser
