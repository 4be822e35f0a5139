"""The `toolchain` command: a thin layer that parses arguments and calls one stage function each.

One function per command in ``COMMANDS`` (parse -> the stage's entry function -> render); the
argument table is cli/parser.py, everything printed for people is cli/render.py.
User errors (ToolchainError, OSError, bad arguments) print one sentence on stderr and exit 2, with no
traceback unless --verbose is given; an unexpected exception prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable

from toolchain.cli import render
from toolchain.cli.parser import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USER_ERROR, build_parser
from toolchain.runtime.errors import ToolchainError

__all__ = ["COMMANDS", "EXIT_INTERNAL_ERROR", "EXIT_INTERRUPTED", "EXIT_USER_ERROR", "build_parser", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def _say(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


def _cuda_options(args: argparse.Namespace) -> dict[str, Any]:
    """--device-id and --gpu-mem-limit as CudaOptions fields (checked by CudaOptions, one sentence on error)."""
    given = {"device_id": args.device_id, "gpu_mem_limit": args.gpu_mem_limit}
    return {k: v for k, v in given.items() if v is not None}


@command
def cmd_export(args: argparse.Namespace) -> int:
    from toolchain.export.core import export

    manifest = export(args.model, args.out, task=args.task, opset=args.opset, atol=args.atol, progress=_say,
                      trust_remote_code=args.trust_remote_code, exporter=args.exporter, max_length=args.max_length)
    print(render.export_summary(manifest, args.out))
    return 0


@command
def cmd_validate(args: argparse.Namespace) -> int:
    from toolchain.variants.validate import validate

    checks = validate(args.dir, variants=args.variant or None, data=args.data, trust_remote_code=args.trust_remote_code)
    print("\n".join(render.validate_lines(checks, args.dir)))
    return 0


@command
def cmd_run(args: argparse.Namespace) -> int:
    from toolchain.runtime import load

    model = load(args.dir, variant=args.variant, provider=args.provider, cuda=_cuda_options(args))
    printer = render.PRINTERS.get(model.manifest.task)
    if printer is None:
        raise ToolchainError(f"`toolchain run` has no output for task {model.manifest.task!r} yet; "
                             f"it serves {', '.join(render.PRINTERS)}.")
    result = getattr(model, printer.method)(args.texts, **{k: getattr(args, k) for k in printer.options})
    info = model.info()
    if args.json:
        payload = result.tolist() if hasattr(result, "tolist") else result
        print(json.dumps({"info": info, printer.method: payload}, ensure_ascii=False))
        return 0
    printer(args.texts, result)
    print(render.run_footer(info), file=sys.stderr)
    return 0


@command
def cmd_info(args: argparse.Namespace) -> int:
    from toolchain.runtime import read_manifest

    m = read_manifest(args.dir)
    for name in m.variants:  # a damaged artifact is refused here as load() refuses it (sha256, paths)
        m.verify_components(name)  # every component: one model graph, or an encoder and a decoder
    m.tokenizer_path()
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    print("\n".join(render.info_lines(m)))
    return 0


@command
def cmd_quantize(args: argparse.Namespace) -> int:
    from toolchain.variants.quantize import quantize

    r = quantize(args.dir, args.mode, calib=args.calib, max_drop=args.max_drop, target=args.target,
                 limit=args.limit, progress=_say)
    if args.explain:
        from toolchain.variants.plans import explain

        print("\n".join(explain(r)))
    print(render.quantize_summary(r, args.dir))
    return 0 if r.passed else 1


@command
def cmd_optimize(args: argparse.Namespace) -> int:
    from toolchain.variants.optimize import optimize

    rows = optimize(args.dir, base=args.base, rewrites=args.rewrite, calib=args.calib, max_drop=args.max_drop,
                    progress=_say)
    print("\n".join(render.optimize_lines(rows)))
    return 0


@command
def cmd_bench(args: argparse.Namespace) -> int:
    from toolchain.bench.core import bench, format_table

    report = bench(args.dir, variants=args.variants, batches=args.batch, seqs=args.seq, provider=args.provider,
                   vs_pytorch=args.vs_pytorch, real=not args.no_real, runs=args.runs, threads=args.threads,
                   json_path=args.json_out, progress=_say, cuda=_cuda_options(args),
                   trust_remote_code=args.trust_remote_code)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


@command
def cmd_train(args: argparse.Namespace) -> int:
    from toolchain.train.trainer import train

    if args.nproc is not None:  # torchrun: N processes per node, the same recipe and global batch
        from toolchain.train.distributed import Launch, launch

        result = launch(args.recipe, Launch(args.nproc, args.nnodes, args.rdzv_endpoint), out=args.out,
                        smoke=args.smoke, progress=_say)
    else:
        result = train(args.recipe, out=args.out, smoke=args.smoke, progress=_say)
    print(render.train_summary(result))
    shortfall = render.train_shortfall(result)
    if shortfall:
        print(shortfall, file=sys.stderr)
        return 1
    return 0


@command
def cmd_build(args: argparse.Namespace) -> int:
    from toolchain.pipeline.stages import build, format_summary

    summary = build(args.recipe, out=args.out, smoke=args.smoke, retrain=args.retrain, progress=_say)
    print(format_summary(summary))
    return 0 if summary["ok"] else 1


@command
def cmd_sweep(args: argparse.Namespace) -> int:
    from toolchain.sweep import format_summary, sweep

    summary = sweep(args.recipe, args.sizes, tokens=args.tokens, out=args.out, smoke=args.smoke,
                    budget_ms=args.budget_ms, budget_mb=args.budget_mb, progress=_say, schedule=args.schedule)
    print(format_summary(summary))
    return 0


def default_build(recipe, out, progress):
    """The pipeline's build, for the demo's default artifact (imported only when it is missing)."""
    try:
        from toolchain.pipeline import stages
    except ImportError as exc:
        raise ToolchainError(f"{out} is missing and building it needs the export extra ({exc.name} is not "
                             "installed): pip install -e '.[export]', or pass an artifact DIR.") from None
    return stages.build(recipe, out=out, progress=progress)


@command
def cmd_demo(args: argparse.Namespace) -> int:
    from toolchain.serve.app import demo

    demo(args.dirs, host=args.host, port=args.port, progress=_say, build=default_build, web=args.web)
    print("demo stopped")
    return 0


@command
def cmd_web(args: argparse.Namespace) -> int:
    from toolchain.web import build_site, serve_site

    site = build_site(args.dirs, args.out, variant=args.variant, progress=_say)
    print(f"wrote {args.out}: " + ", ".join(f"{m['name']} ({m['task']}, {m['variant']})" for m in site["models"])
          + f"; {site['bytes'] / 1e6:.1f} MB")
    if args.serve:
        serve_site(args.out, port=args.port, progress=_say)
        print("site server stopped")
    return 0


@command
def cmd_serve(args: argparse.Namespace) -> int:
    from toolchain.fleet import ServeSettings
    from toolchain.fleet.cluster import connect, require_ray, serve_forever

    require_ray("toolchain serve")
    settings = ServeSettings(replicas=args.replicas, host=args.host, port=args.port)
    from toolchain.fleet.deploy import model_names

    model_names(args.dirs)  # a bad DIR is refused before Ray starts
    connect(args.address, haproxy=args.haproxy)
    serve_forever(args.dirs, settings, progress=_say)
    print("serve stopped")
    return 0


@command
def cmd_map(args: argparse.Namespace) -> int:
    from toolchain.fleet import MapSettings
    from toolchain.fleet.cluster import connect, require_ray

    require_ray("toolchain map")
    settings = MapSettings(column=args.column, batch_size=args.batch_size)
    from toolchain.fleet.map import check_paths, map_file

    check_paths(args.dir, args.input, args.output)  # refused before Ray starts
    connect(args.address)
    summary = map_file(args.dir, args.input, args.output, settings, progress=_say)
    print(f"wrote {summary['rows']} rows to {summary['output']} in {summary['seconds']} s "
          f"({summary['rows_per_s']} rows/s, {summary['actors']} actor(s))")
    return 0


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
