#!/usr/bin/env python3
"""Mutation checks for the safety-critical code: break one promise at a time and see whether a test fails.

Each entry of MUTATIONS replaces one snippet (it must occur exactly once in exactly one of the files its
glob matches, so a module split does not lose it) and names the tests that must catch it. The script
copies the working tree (minus .venv, .git and caches) into a temp dir once, checks that the named tests
pass there unmutated (the baseline), then applies each mutation alone, runs its tests with the same
Python (PYTHONPATH = the copy), and restores the file. The checkout itself is never written to.

    .venv/bin/python tests/mutation/run_mutations.py              # all fast mutations
    .venv/bin/python tests/mutation/run_mutations.py --slow       # and the slow ones
    .venv/bin/python tests/mutation/run_mutations.py gate-decoder-never-fails resume-ignored
    .venv/bin/python tests/mutation/run_mutations.py --list

Exit status 0 when every mutation run was caught, 1 when one survived (or its snippet is gone: update the
table), 2 when the baseline fails. Run it before calling a change to a module listed here done, and add a
row for every new promise (translate, caption, serving ...). Stdlib only; not part of the default test run
(tests/mutation/test_mutation_table.py only checks that the table's snippets still exist).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    id: str
    files: str  # a glob relative to the repository root; the snippet must be in exactly one matching file
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repository root
    promise: str  # what the mutation breaks
    slow: bool = False


MUTATIONS: tuple[Mutation, ...] = (
    # -- gates ---------------------------------------------------------------------------------------
    Mutation("gate-decoder-never-fails", "toolchain/variants/gate*.py",
             "need_agree, max_ratio = 1 - 4 * max_drop, 1 + max_drop",
             "need_agree, max_ratio = 0.0, float('inf')",
             ("tests/variants/test_gate_rules.py",),
             "decoder int8 gate: next-token agreement >= 1 - 4*budget and perplexity ratio <= 1 + budget"),
    Mutation("gate-decoder-ignores-perplexity", "toolchain/variants/gate*.py",
             "passed = bool(agreement >= need_agree and ppl_got <= ppl_ref * max_ratio)",
             "passed = bool(agreement >= need_agree)",
             ("tests/variants/test_gate_rules.py",),
             "decoder gate checks perplexity, not only agreement"),
    Mutation("gate-embed-never-fails", "toolchain/variants/gate*.py",
             "passed = bool(mean >= need_mean and worst >= need_min)", "passed = True",
             ("tests/variants/test_gate.py",), "embedding gate: cosine to fp32 within budget"),
    Mutation("gate-embed-ignores-worst", "toolchain/variants/gate*.py",
             "passed = bool(mean >= need_mean and worst >= need_min)", "passed = bool(mean >= need_mean)",
             ("tests/variants/test_gate.py",), "embedding gate: the worst text within 4x budget"),
    Mutation("gate-classify-never-fails", "toolchain/variants/gate*.py",
             'return GateResult(metrics, bool(drop <= max_drop), f"accuracy {acc_got',
             'return GateResult(metrics, True, f"accuracy {acc_got',
             ("tests/variants/test_gate.py",), "classifier gate: accuracy drop within budget"),
    Mutation("validate-ignores-gate", "toolchain/variants/validate*.py",
             'checks.append(Check(name, "gate", result.passed, result.summary))',
             'checks.append(Check(name, "gate", True, result.summary))',
             ("tests/variants/test_validate_gate.py",), "validate re-runs a lossy variant's gate and reports a miss"),
    Mutation("optimize-ignores-speed", "toolchain/variants/optimize*.py",
             "kept = result.passed and speedup >= MIN_SPEEDUP", "kept = result.passed",
             ("tests/variants/test_optimize.py",), "optimize keeps a rewrite only when measurably faster"),
    # -- parity --------------------------------------------------------------------------------------
    Mutation("parity-ignores-token-ids", "toolchain/export/parity*.py",
             "return ours == reference.token_ids(PARITY_TEXTS, model.manifest.max_length)",
             "return True",
             ("tests/export/test_parity_tokenizer.py",), "export parity compares the tokenizer's ids with PyTorch's"),
    Mutation("parity-ignores-outputs", "toolchain/export/parity*.py",
             "bool(max(diff, alone) <= atol and tokens_match)",
             "bool(tokens_match)",
             ("tests/cli/test_cli.py::test_validate_reports_parity_miss",),
             "encoder parity: outputs within atol of PyTorch"),
    # -- artifact writes -----------------------------------------------------------------------------
    Mutation("write-json-in-place", "toolchain/artifact/*.py",
             '    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")\n    try:\n        with open(tmp, "w", encoding="utf-8") as fh:\n'
             '            json.dump(data, fh, indent=2, sort_keys=False)\n            fh.write("\\n")\n            fh.flush()\n'
             '            os.fsync(fh.fileno())\n        os.replace(tmp, path)\n    except BaseException:\n'
             '        tmp.unlink(missing_ok=True)\n        raise\n',
             '    with open(path, "w", encoding="utf-8") as fh:  # in place: no temp file, no fsync, no replace\n'
             '        json.dump(data, fh, indent=2, sort_keys=False)\n        fh.write("\\n")\n',
             ("tests/artifact/test_write_json.py",), "write_json: temp file, fsync, os.replace"),
    Mutation("write-json-no-fsync", "toolchain/artifact/*.py",
             "            fh.flush()\n            os.fsync(fh.fileno())\n        os.replace(tmp, path)",
             "            fh.flush()\n        os.replace(tmp, path)",
             ("tests/artifact/test_write_json.py",), "write_json flushes the data to disk before the swap"),
    Mutation("atomic-dir-keeps-temp-on-failure", "toolchain/artifact/*.py",
             "        shutil.rmtree(tmp, ignore_errors=True)\n        if err is None:\n            raise",
             "        if err is None:\n            raise",
             ("tests/test_interrupted.py",), "atomic_dir removes its temp dir when the build fails", slow=True),
    # -- runtime integrity and the KV cache -----------------------------------------------------------
    Mutation("sha256-not-checked", "toolchain/runtime/*.py",
             "if sha256_file(path) != f.sha256:", "if False:",
             ("tests/test_damaged_artifacts.py",), "the runtime refuses a variant whose sha256 does not match"),
    Mutation("kv-cache-not-swapped", "toolchain/runtime/generate*.py",
             "self.length, self.turn = length, 1 - self.turn", "self.length, self.turn = length, self.turn",
             ("tests/runtime/test_generate.py",), "KV cache: past read from one buffer, present written to the other"),
    # -- training ------------------------------------------------------------------------------------
    Mutation("resume-ignored", "toolchain/train/*.py",
             "trainer.train(resume_from_checkpoint=str(resume) if resume else None)",
             "trainer.train(resume_from_checkpoint=None)",
             ("tests/train/test_resume.py",), "an interrupted run resumes with the checkpoint's step and optimizer"),
    Mutation("learning-rate-zero", "toolchain/train/*.py",
             "learning_rate=settings.learning_rate,", "learning_rate=0.0,",
             ("tests/train/test_learning.py",), "training learns (loss down, dev accuracy above chance)"),
    # -- users' own nn.Modules (issue 14) and the registries (issue 12) ---------------------------------
    Mutation("parity-ignores-padding-alone", "toolchain/export/parity*.py",
             "bool(max(diff, alone) <= atol and tokens_match)", "bool(diff <= atol and tokens_match)",
             ("tests/export/test_custom_modules.py",), "a module that reads its padding fails parity"),
    Mutation("torch-exporter-takes-hf-models", "toolchain/export/torch_export*.py",
             'return source.kind == "module" and task_spec(settings.task).method != "generate"',
             'return task_spec(settings.task).method != "generate"',
             ("tests/export/test_custom_modules.py", "tests/export/test_export.py"),
             "only module sources go to the torch exporter"),
    Mutation("bench-runs-untrusted-module", "toolchain/bench/core*.py",
             "    if runs_own_code(entry):\n", "    if False:\n",
             ("tests/export/test_custom_modules.py",), "bench --vs-pytorch imports outside module code only when trusted"),
    Mutation("runtime-registry-ignored", "toolchain/runtime/base*.py",
             "return RUNTIMES[spec.name]", "return next(iter(RUNTIMES.values()))",
             ("tests/runtime/test_runtimes.py", "tests/test_registries.py"), "load() returns the class of the task"),
)

IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis",
                                "dist", "node_modules", "*.pyc")


def locate(m: Mutation, root: Path = ROOT) -> tuple[Path | None, str]:
    """The one file under ROOT holding M's snippet exactly once, or None and why not."""
    hits = []
    for name in sorted(glob.glob(str(root / m.files), recursive=True)):
        text = Path(name).read_text(encoding="utf-8")
        if m.old in text:
            hits.append((Path(name), text.count(m.old)))
    if not hits:
        return None, f"snippet not found in {m.files}"
    if len(hits) > 1 or hits[0][1] != 1:
        return None, f"snippet not unique in {m.files}: " + ", ".join(f"{p.relative_to(root)} x{n}" for p, n in hits)
    return hits[0][0], ""


def run_tests(copy: Path, tests: list[str], python: str, timeout: int) -> tuple[int | None, str, float]:
    env = dict(os.environ, PYTHONPATH=str(copy), HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    cmd = [python, "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", time.monotonic() - started
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def failed_tests(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutation ids to run (default: all fast ones)")
    parser.add_argument("--slow", action="store_true", help="include the mutations marked slow")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree to copy (default: this checkout)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs pytest (default: this one)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the named tests")
    args = parser.parse_args(argv)

    known = {m.id: m for m in MUTATIONS}
    unknown = [i for i in args.ids if i not in known]
    if unknown:
        parser.error(f"unknown mutation id(s) {', '.join(unknown)}; see --list")
    chosen = [known[i] for i in args.ids] if args.ids else [m for m in MUTATIONS if args.slow or not m.slow]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:34} {m.files:32} {'(slow) ' if m.slow else ''}{m.promise}")
        return 0

    source = args.source.resolve()
    with tempfile.TemporaryDirectory(prefix="mutations-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(source, copy, ignore=IGNORE, symlinks=True)
        located = {m.id: locate(m, copy) for m in chosen}
        runnable = [m for m in chosen if located[m.id][0] is not None]
        if not args.no_baseline and runnable:
            tests = sorted({t for m in runnable for t in m.tests})
            print(f"baseline: {len(tests)} test target(s) unmutated ...", flush=True)
            rc, out, secs = run_tests(copy, tests, args.python, args.timeout * 2)
            if rc != 0:
                print(out[-4000:])
                print(f"baseline FAILED (rc {rc}) in {secs:.0f}s: fix the tests before judging mutations.")
                return 2
            print(f"baseline passed in {secs:.0f}s", flush=True)

        rows = []
        for m in chosen:
            path, why = located[m.id]
            if path is None:
                rows.append((m, "STALE", why, 0.0))
                print(f"{m.id}: STALE ({why})", flush=True)
                continue
            original = path.read_text(encoding="utf-8")
            path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
            try:
                rc, out, secs = run_tests(copy, list(m.tests), args.python, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            if rc is None:
                verdict, detail = "caught", f"timeout after {secs:.0f}s"
            elif rc == 1:
                last = [line for line in out.splitlines() if line.strip()][-1:] or ["tests failed"]
                verdict, detail = "caught", ", ".join(failed_tests(out)) or last[0].strip("= ")
            elif rc == 0:
                verdict, detail = "SURVIVED", "every named test passed"
            else:
                verdict, detail = "caught", f"pytest exit {rc} (error: " + (failed_tests(out) or ["see output"])[0] + ")"
            rows.append((m, verdict, detail, secs))
            print(f"{m.id}: {verdict} in {secs:.0f}s ({detail})", flush=True)

    print("\n| mutation | file | promise | result | caught by / why |\n|---|---|---|---|---|")
    for m, verdict, detail, _ in rows:
        where = located[m.id][0].relative_to(copy) if located[m.id][0] else m.files
        print(f"| {m.id} | {where} | {m.promise} | {verdict} | {detail} |")
    caught = sum(1 for r in rows if r[1] == "caught")
    print(f"\n{len(rows)} mutations: {caught} caught, {sum(r[1] == 'SURVIVED' for r in rows)} survived, "
          f"{sum(r[1] == 'STALE' for r in rows)} stale")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
