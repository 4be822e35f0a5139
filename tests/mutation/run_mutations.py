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
    # -- captioning (issue 16) -------------------------------------------------------------------------
    Mutation("caption-loss-shifted-twice", "toolchain/train/caption_stage.py",
             'model.loss_type = "ForMaskedLM"', "pass",
             ("tests/train/test_caption_stage.py::test_the_loss_scores_each_caption_position",),
             "the captioner learns caption token t at position t (not t + 1: transformers' default loss)"),
    Mutation("shapes-caption-order-random", "toolchain/data/shapes.py",
             "    items, relation = canonical(items, relation)\n", "",
             ("tests/data/test_shapes.py::test_the_caption_is_a_function_of_the_picture",),
             "a shapes caption names the larger shape first: one caption per picture, not a coin toss"),
    Mutation("shapes-canonical-keeps-relation", "toolchain/data/shapes.py",
             "return (items[1], items[0]), INVERSE[relation]", "return (items[1], items[0]), relation",
             ("tests/data/test_shapes.py::test_the_caption_is_a_function_of_the_picture",),
             "putting the larger shape first turns the relation round (above <-> below, left of <-> right of)"),
    Mutation("shapes-render-background-unrounded", "toolchain/data/shapes.py",
             "bg[..., c] = (rest * float(scene.top[c]) + ramp * float(scene.bottom[c])).round()",
             "bg[..., c] = rest * float(scene.top[c]) + ramp * float(scene.bottom[c])",
             ("tests/data/test_shapes.py::test_render_draws_the_pixels_it_always_drew",),
             "render() draws the pixels it always drew (the checked-in TSVs are drawn on demand)"),
    Mutation("shapes-render-fast-no-shapes", "toolchain/data/shapes.py",
             "out += cover * (np.asarray(item.rgb, np.float64) - out)", "out += 0 * cover",
             ("tests/data/test_shapes.py::test_render_fast_draws_what_render_draws_up_to_rounding",),
             "pictures drawn afresh for training are the data set's pictures up to rounding"),
    Mutation("shapes-render-fast-no-noise", "toolchain/data/shapes.py",
             "return np.clip(out.round() + noise, 0, 255)", "return np.clip(out.round(), 0, 255)",
             ("tests/data/test_shapes.py::test_render_fast_draws_what_render_draws_up_to_rounding",),
             "pictures drawn afresh for training carry the scene's noise"),
    Mutation("shapes-redraw-swap-keeps-relation", "toolchain/data/shapes.py",
             "shapes, relation = shapes[::-1], INVERSE[relation]", "shapes, relation = shapes[::-1], relation",
             ("tests/data/test_shapes.py::test_redraw_is_a_new_picture_of_the_same_caption",),
             "a redrawn scene keeps its caption when the other shape is placed first"),
    Mutation("caption-redraw-same-picture", "toolchain/train/caption_stage.py",
             "shapes.render_fast(shapes.redraw(x, rng))", "shapes.render_fast(x)",
             ("tests/train/test_caption_stage.py::test_redraw_draws_each_training_caption_anew_every_time",),
             "augment redraw: a training caption gets a new picture every time it is used"),
    Mutation("caption-gate-never-fails", "toolchain/variants/gate*.py",
             "return GateResult(metrics, bool(em_drop <= max_drop and bleu_drop <= max_drop),",
             "return GateResult(metrics, True,",
             ("tests/variants/test_caption_gate.py::test_the_gate_passes_within_budget_and_fails_past_it",),
             "caption gate: exact-match drop within budget"),
    Mutation("caption-gate-ignores-bleu", "toolchain/variants/gate*.py",
             "return GateResult(metrics, bool(em_drop <= max_drop and bleu_drop <= max_drop),",
             "return GateResult(metrics, bool(em_drop <= max_drop),",
             ("tests/variants/test_caption_gate.py::test_bleu_counts_even_where_exact_match_does_not_move",),
             "caption gate: BLEU-4 drop within budget too"),
    Mutation("seq2seq-max-new-uncapped", "toolchain/runtime/seq2seq.py",
             "search.max_new_tokens = min(search.max_new_tokens, self.max_positions)", "pass",
             ("tests/runtime/test_caption.py::test_max_new_tokens_is_capped_at_the_decoder_positions",
              "tests/runtime/test_translate.py::test_max_new_tokens_is_capped_at_the_target_positions"),
             "caption() and translate() never step past the decoder's position table"),
    Mutation("caption-parity-ignores-ids", "toolchain/export/parity.py",
             "tokens_match = same_pixels and alone == theirs and batched == theirs", "tokens_match = same_pixels",
             ("tests/export/test_caption_export.py::test_parity_fails_when_the_runtime_decodes_differently",),
             "caption parity: greedy ids equal PyTorch generate()'s"),
    Mutation("info-single-graph-only", "toolchain/cli/commands.py",
             "m.verify_components(name)  # every component", "m.verify(name)  # every component",
             ("tests/cli/test_cli_caption.py::test_info_lists_both_graphs",),
             "`toolchain info` shows encoder-decoder artifacts (two graphs), not an error"),
    Mutation("caption-batch-rows-mixed", "toolchain/runtime/seq2seq.py",
             "return np.ascontiguousarray(a) if identity else np.ascontiguousarray(a[origin])",
             "return np.ascontiguousarray(a[::-1]) if identity else np.ascontiguousarray(a[origin])",
             ("tests/runtime/test_caption.py::test_a_batch_captions_each_image_as_alone",),
             "a batch of images is captioned as each image alone (encoder rows reach their decoder rows)"),
    Mutation("vision-cross-not-hoisted", "toolchain/export/seq2seq_vision.py", "    if not dims:\n", "    if True:\n",
             ("tests/export/test_caption_export.py::test_the_encoder_projects_the_cross_attention_keys_and_values_once",),
             "a captioner's decoder step reads the cross-attention K/V the encoder projected once, not the states"),
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
    # -- int8: per-row scales, batch invariance, the measured search (issue 18) -----------------------------
    Mutation("rowquant-per-tensor", "toolchain/variants/rowquant.py",
             'added.append(_const("axes", np.array([-1], np.int64)))',
             'added.append(_const("axes", np.array([0, 1, 2], np.int64)))',
             ("tests/variants/test_quantize_rows.py::test_rowquant_rows_do_not_depend_on_each_other",),
             "per-row int8: each token's scale is its own, so the batch cannot change it"),
    Mutation("invariance-probe-never-fails", "toolchain/variants/invariance.py",
             'out = {"invariant": bool(diff <= TOLERANCE),', 'out = {"invariant": True,',
             ("tests/variants/test_quantize_rows.py::test_probe_catches_per_tensor_int8",),
             "the batch-invariance probe catches a variant whose result depends on its batch"),
    Mutation("info-hides-batch-invariance", "toolchain/runtime/base.py",
             '"batch_invariant": (v.metrics.get("batch_invariance") or {}).get("invariant"),',
             '"batch_invariant": None,',
             ("tests/variants/test_quantize_rows.py::test_every_variant_claiming_invariance_is_invariant",),
             "info() reports the measured batch invariance of the variant in use"),
    Mutation("search-no-bisect", "toolchain/variants/plans.py",
             "while hit is not None and hit - miss > 1 and len(tried) < max_gated:",
             "while False:",
             ("tests/variants/test_quantize_rows.py::test_search_keeps_fewest_most_sensitive",),
             "the plan search keeps the fewest most sensitive layers in fp32 with which the gate passes"),
    Mutation("sensitivity-reads-padding", "toolchain/variants/sensitivity.py",
             "rows[a].append(flat[real] if len(flat) == len(real) else flat)", "rows[a].append(flat)",
             ("tests/variants/test_quantize_rows.py::test_sensitivity_ranking",
              "tests/variants/test_static.py::test_calibration_reads_real_tokens_only"),
             "the ranking scores, and static calibration reads, real tokens only, not padding"),
    Mutation("smooth-weights-not-scaled", "toolchain/variants/smooth.py",
             "w = _array(inits[node.input[1]]) * s[:, None]", "w = _array(inits[node.input[1]])",
             ("tests/variants/test_static.py::test_fold_is_exact_on_a_layernorm",
              "tests/variants/test_static.py::test_fold_is_exact_on_bert",
              "tests/variants/test_smooth.py::test_mul_site_only_where_the_matmul_is_quantized"),
             "smoothing is exact: the weights take back what the LayerNorm's gamma and beta give up"),
    Mutation("smooth-residual-divided", "toolchain/variants/smooth.py",
             "target = norm if site.exclusive else _copy(norm,", "target = norm if True else _copy(norm,",
             ("tests/variants/test_static.py::test_fold_is_exact_on_a_layernorm",
              "tests/variants/test_static.py::test_fold_is_exact_on_bert"),
             "post-LN: the residual stream keeps the unsmoothed LayerNorm output"),
    Mutation("static-fixed-percentile", "toolchain/variants/static.py",
             "return min(Range.each(x, PERCENTILES), key=error)", "return Range.of(x, PERCENTILES[0])",
             ("tests/variants/test_static.py::test_range_percentile_chosen_by_output_error",),
             "each activation's clipping percentile is chosen by the output error it causes"),
    Mutation("static-alpha-not-gated", "toolchain/variants/static.py",
             "best = max(range(len(gated)), key=lambda i: gated[i])", "best = 0",
             ("tests/variants/test_static.py::test_search_tries_per_activation_alphas_first",),
             "the search runs at the smoothing the gate passed (else scored best)"),
    Mutation("static-alpha-not-per-activation", "toolchain/variants/static.py",
             "min(ALPHAS, key=lambda a, act=act: self._error(act, a, fmt))", "ALPHAS[-1]",
             ("tests/variants/test_static.py::test_alpha_per_activation_is_the_one_with_the_least_output_error",),
             "each activation's alpha is the one with the least output error"),
    Mutation("static-alpha-sample-unweighted", "toolchain/variants/static.py",
             "np.full(len(picked), len(rest) / len(picked))", "np.full(len(picked), 1.0)",
             ("tests/variants/test_static.py::test_range_percentile_chosen_by_output_error",),
             "the sampled rows stand for the rows left out (rare outliers not over-counted)"),
    Mutation("smooth-value-fold-columns", "toolchain/variants/smooth.py",
             "_array(inits[matmul.input[1]]) / s[None, :]", "_array(inits[matmul.input[1]])",
             ("tests/variants/test_smooth.py::test_context_folds_into_the_value_projection",
              "tests/variants/test_static.py::test_fold_is_exact_on_bert"),
             "the context's smoothing is folded into the value projection's columns"),
    Mutation("smooth-value-mixed-heads", "toolchain/variants/smooth.py",
             "if perm is not None and perm != sorted(perm):", "if False:",
             ("tests/variants/test_smooth.py::test_context_is_not_folded_where_channels_mix_or_v_is_read_elsewhere",),
             "a path whose transposes mix channels is never folded"),
    Mutation("smooth-graph-output-ignored", "toolchain/variants/smooth.py",
             "readers.setdefault(o.name, []).append(_Caller())", "pass",
             ("tests/variants/test_smooth.py::test_context_is_not_folded_where_channels_mix_or_v_is_read_elsewhere",),
             "a tensor the caller reads is never smoothed"),
    Mutation("smooth-identity-not-constant", "toolchain/variants/smooth.py",
             "consts[n.output[0]] = consts[n.input[0]]", "pass",
             ("tests/variants/test_smooth.py::test_bert_has_every_kind_and_an_excluded_layer_reads_its_input_unsmoothed",),
             "a parameter an exporter copied through Identity is still a constant a site can fold into"),
    Mutation("smooth-mul-for-fp32-layers", "toolchain/variants/smooth.py",
             'if quantized is None or m in quantized or site.kind != "mul"]', 'if True]',
             ("tests/variants/test_smooth.py::test_mul_site_only_where_the_matmul_is_quantized",
              "tests/variants/test_smooth.py::test_bert_has_every_kind_and_an_excluded_layer_reads_its_input_unsmoothed"),
             "a layer kept in fp32 reads its input unsmoothed (no Mul, no scaled weights)"),
    Mutation("static-qdq-unsmoothed-range", "toolchain/variants/static.py",
             "r = ranges[cal.reads[node.name]]", "r = cal.ranges(0.0)[cal.reads[node.name]]",
             ("tests/variants/test_static.py::test_qdq_computes_what_the_ranking_simulates",),
             "the QDQ graph computes what the ranking simulated (the range of the smoothed activation)"),
    Mutation("static-gate-ignored", "toolchain/variants/quantize.py",
             "result, self.reference = judge(self.scratch, name, self.data, self.max_drop, self.reference)",
             "result, self.reference = judge(self.scratch, name, self.data, 0.9, self.reference)",
             ("tests/variants/test_static.py::test_gate_refuses_a_broken_candidate",),
             "the gate refuses a broken int8-static candidate"),
    Mutation("sensitivity-least-first", "toolchain/variants/sensitivity.py",
             "return sorted(scores, key=lambda s: -s.error)", "return sorted(scores, key=lambda s: s.error)",
             ("tests/variants/test_quantize_rows.py::test_sensitivity_ranking",), "the ranking puts the most sensitive layer first"),
    Mutation("seven-bit-is-eight", "toolchain/variants/rowquant.py",
             'WeightFormat("u8s8-7bit", True, 63,', 'WeightFormat("u8s8-7bit", True, 127,',
             ("tests/variants/test_quantize_rows.py::test_weight_formats",), "AVX2's u8s8 format keeps weights within 7 bits (no saturation)"),
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
             '    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")\n    try:\n        with open(tmp, "wb") as fh:\n'
             '            fh.write(data)\n            if durable:\n                fh.flush()\n'
             '                os.fsync(fh.fileno())\n        os.replace(tmp, path)\n    except BaseException:\n'
             '        tmp.unlink(missing_ok=True)\n        raise\n',
             '    with open(path, "wb") as fh:  # in place: no temp file, no fsync, no replace\n'
             '        fh.write(data)\n',
             ("tests/artifact/test_write_json.py",), "write_json: temp file, fsync, os.replace"),
    Mutation("write-json-no-fsync", "toolchain/artifact/*.py",
             "                fh.flush()\n                os.fsync(fh.fileno())\n        os.replace(tmp, path)",
             "                fh.flush()\n        os.replace(tmp, path)",
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
    Mutation("usage-misses-the-limit", "toolchain/runtime/generate*.py",
             "        self.count += 1\n", "        self.count += 0\n",
             ("tests/runtime/test_generate.py",), "generate(usage=...) counts the tokens it generated"),
    Mutation("usage-eos-reads-as-length", "toolchain/runtime/generate*.py",
             '                row.reason = "stop"\n', "",
             ("tests/runtime/test_generate.py",), "EOS ends a generation with finish reason stop"),
    Mutation("bench-runs-untrusted-module", "toolchain/bench/core*.py",
             "    if runs_own_code(entry):\n", "    if False:\n",
             ("tests/export/test_custom_modules.py",), "bench --vs-pytorch imports outside module code only when trusted"),
    Mutation("bench-child-stdin-main-allowed", "toolchain/bench/harness.py",
             "    if main and not os.path.isfile(main):", "    if False:",
             ("tests/bench/test_harness.py",), "a bench called from a stdin script is refused in one sentence"),
    Mutation("bench-child-broken-pool-bare", "toolchain/bench/harness.py",
             "    except BrokenProcessPool as exc:", "    except ZeroDivisionError as exc:",
             ("tests/bench/test_harness.py",), "a dead bench child (unguarded script) names the fix"),
    Mutation("runtime-registry-ignored", "toolchain/runtime/base*.py",
             "return RUNTIMES[spec.name]", "return next(iter(RUNTIMES.values()))",
             ("tests/runtime/test_runtimes.py", "tests/test_registries.py"), "load() returns the class of the task"),
    # -- the model in the browser (issue 20) ------------------------------------------------------------
    Mutation("web-truncation-off", "demos/web/toolchain-web.js",
             "const truncated = ids.length > this.maxLength;", "const truncated = false;",
             ("tests/web/test_web_browser.py::test_the_views_show_results_latency_and_a_truncation_note",),
             "the page truncates past max_length, with a visible note"),
    Mutation("web-pooling-ignores-manifest", "demos/web/toolchain-web.js",
             "let vec = POOLS[pooling.mode](rows, mask);", "let vec = POOLS.cls(rows, mask);",
             ("tests/web/test_web_browser.py::test_the_page_matches_the_python_runtime_on_sst2",), "the page pools as the manifest says"),
    Mutation("web-labels-ignored", "demos/web/toolchain-web.js",
             "label: (this.manifest.labels ?? [])[i] ?? `LABEL_${i}`", "label: `LABEL_${i}`",
             ("tests/web/test_web_browser.py::test_the_page_matches_the_python_runtime_on_sst2",), "the page labels with the manifest's labels"),
    Mutation("web-sha256-unchecked", "demos/web/toolchain-web.js",
             "if (digest !== null && digest !== web.sha256)", "if (false)",
             ("tests/web/test_web_browser.py::test_a_model_file_that_does_not_match_its_sha256_is_refused_in_the_page",),
             "the page refuses a graph whose sha256 differs from the manifest's"),
    Mutation("web-offline-shell-only", "demos/web/sw.js",
             'await cache.addAll(["./", "./site.json", ...site.files]);', 'await cache.addAll(["./", "./site.json"]);',
             ("tests/web/test_web_browser.py::test_a_second_visit_works_with_the_server_stopped",), "a second visit works with no server"),
    Mutation("web-not-isolated", "toolchain/web/server*.py",
             '"Cross-Origin-Embedder-Policy": "require-corp",', '"X-Unused": "require-corp",',
             ("tests/web/test_web_site.py::test_the_server_sends_the_isolation_headers_and_wasm_type",
              "tests/web/test_web_browser.py::test_the_page_matches_the_python_runtime_on_sst2"), "the served page is cross-origin isolated"),
    Mutation("web-task-not-refused", "toolchain/web/site*.py",
             "    if not isinstance(page, Page):\n", "    if False:\n",
             ("tests/web/test_web_site.py::test_a_task_the_page_cannot_run_is_refused_in_one_sentence_before_any_write",),
             "toolchain web refuses a task the page cannot run, before writing"),
    Mutation("web-build-in-place", "toolchain/web/site*.py",
             "with atomic_dir(out, marker=SITE_JSON) as tmp:", "with __import__('contextlib').nullcontext(Path(out)) as tmp:",
             ("tests/web/test_web_site.py::test_a_failed_build_leaves_the_previous_site_untouched",), "a failed build leaves the previous site"),
    # -- sweep (issue 21) ----------------------------------------------------------------------------
    Mutation("sweep-fit-drops-offset", "toolchain/sweep/fit*.py",
             "    return a * u ** (-alpha) + c", "    return a * u ** (-alpha) + 0 * c",
             ("tests/sweep/test_fit.py::test_recovers_a_known_law_exactly",),
             "the scaling law keeps its irreducible term c: alpha is recovered from L = a*N^-alpha + c"),
    Mutation("sweep-ci-wrong-stderr", "toolchain/sweep/fit*.py",
             "alpha_ci = (alpha - t * spread[1], alpha + t * spread[1])",
             "alpha_ci = (alpha - t * spread[0], alpha + t * spread[0])",
             ("tests/sweep/test_fit.py::test_interval_covers_the_truth_at_its_level",),
             "alpha's interval comes from alpha's own variance and covers the truth at its level"),
    Mutation("sweep-resume-rebuilds", "toolchain/sweep/core*.py",
             "    if done.is_file() and _read(folder / POINT) == stamp:", "    if False:",
             ("tests/sweep/test_sweep.py::test_an_interrupted_sweep_resumes_at_the_next_unfinished_size",),
             "a rerun of a killed sweep reuses the finished sizes and builds only the rest"),
    Mutation("sweep-front-keeps-dominated", "toolchain/sweep/pareto*.py",
             "        if row[quality] < best:", "        if row[quality] <= best + 1:",
             ("tests/sweep/test_pareto.py::test_front_keeps_only_what_nothing_beats",),
             "the Pareto front holds only variants nothing cheaper beats"),
    Mutation("sweep-counts-embeddings", "toolchain/sweep/measure*.py",
             "non_embedding += 0 if EMBEDDING.search(name) else count", "non_embedding += count",
             ("tests/sweep/test_sweep.py::test_non_embedding_parameters_leave_out_token_and_position_tables",),
             "the fit's N leaves out token/position embeddings and the LM head"),
    # -- past one machine: Ray Serve, Ray Data, torchrun (issue 19) --------------------------------------
    Mutation("fleet-batch-split-misaligned", "toolchain/fleet/deploy.py",
             "results.append(out[start : start + len(texts)])", "results.append(out[: len(texts)])",
             ("tests/fleet/test_serve.py::test_concurrent_requests_each_get_their_own_answer",),
             "requests batched together by @serve.batch each get their own answer back"),
    Mutation("fleet-stream-first-piece-lost", "toolchain/fleet/deploy.py",
             "        piece = first\n", "        piece = ''\n",
             ("tests/fleet/test_serve.py::test_greedy_completion_equals_generate_and_stream_joins",),
             "streamed completion pieces join to the full greedy text"),
    Mutation("fleet-blank-input-reaches-model", "toolchain/fleet/openai_api.py",
             "if not item.strip():", "if False:",
             ("tests/fleet/test_serve.py::test_openai_client_raises_on_a_bad_request",),
             "blank inputs are a 400 of one sentence before any replica is asked"),
    Mutation("fleet-map-drops-empty-lines", "toolchain/fleet/map.py",
             "read_text(path, drop_empty_lines=False, num_cpus=0)", "read_text(path, drop_empty_lines=True, num_cpus=0)",
             ("tests/fleet/test_map.py::test_map_txt_keeps_order_and_count",),
             "toolchain map keeps every input row (count and order)"),
    Mutation("fleet-image-count-uncapped", "toolchain/fleet/openai_api.py",
             "    if len(items) > limits.max_inputs:\n        raise ApiError(400, f\"'image' has",
             "    if False:\n        raise ApiError(400, f\"'image' has",
             ("tests/fleet/test_openai_api.py::test_classify_image_requests_are_checked",),
             "/v1/classify_image (and /v1/caption) refuse more images than the per-request cap with a 400"),
    Mutation("loadbench-never-wrong", "toolchain/fleet/loadbench.py",
             "not np.allclose(got, want[k], atol=load.atol)", "False",
             ("tests/fleet/test_loadbench.py::test_http_load_counts_wrong_and_failed_answers",),
             "the load benchmark counts every answer off the runtime's as wrong"),
    Mutation("seq2seq-no-checkpoints", "toolchain/train/seq2seq_stage.py",
             "step_loss=_loss_for(spec), ckpt=ckpt, tok=tok)", "step_loss=_loss_for(spec))",
             ("tests/train/test_distributed_modules.py::test_an_encoder_decoder_module_learns_with_two_processes_what_one_does",),
             "an encoder-decoder module's training keeps checkpoints to resume from"),
    Mutation("seq2seq-refused-under-torchrun", "toolchain/train/distributed.py",
             "    recipe = load_recipe(recipe_path)\n",
             "    recipe = load_recipe(recipe_path)\n    if recipe.task == 'text2text-generation':\n"
             "        raise RecipeError('text2text-generation train in one process')\n",
             ("tests/train/test_distributed_modules.py::test_an_encoder_decoder_module_learns_with_two_processes_what_one_does",),
             "`toolchain train --nproc 2` runs encoder-decoder module recipes"),
    Mutation("caption-augment-unchecked", "toolchain/train/recipe.py",
             'if recipe.task == "image-to-text" and recipe.train is not None:', "if False:",
             ("tests/train/test_caption_stage.py::test_augmentations_that_change_the_caption_are_refused",),
             "an image-to-text recipe refuses augmentations that change what a caption says"),
    Mutation("fleet-one-batch-in-flight", "toolchain/fleet/deploy.py",
             "batch_wait_timeout_s=0.005, max_concurrent_batches=2)", "batch_wait_timeout_s=0.005)",
             ("tests/fleet/test_deploy.py::test_batches_run_one_at_a_time_on_one_thread_with_the_next_already_queued",),
             "the next encoder batch waits in the model thread's queue while one runs"),
    Mutation("fleet-batches-on-any-thread", "toolchain/fleet/deploy.py",
             "run_in_executor(self.batch_thread, self._encode_all, requests)",
             "run_in_executor(None, self._encode_all, requests)",
             ("tests/fleet/test_deploy.py::test_batches_run_one_at_a_time_on_one_thread_with_the_next_already_queued",),
             "encoder batches run one at a time on the model's own thread"),
    Mutation("fleet-batches-count-requests", "toolchain/fleet/deploy.py",
             "self.batches[sum(len(texts) for texts in requests)] += 1", "self.batches[len(requests)] += 1",
             ("tests/fleet/test_loadbench.py::test_smoke_load_counts_no_wrong_answers",),
             "a replica records the batch sizes it formed as texts per runtime call"),
    Mutation("haproxy-fixed-side-ports", "toolchain/fleet/cluster.py",
             "            os.environ.setdefault(key, str(_free_port()))\n", "            pass\n",
             ("tests/fleet/test_cluster.py::test_haproxy_side_pages_get_free_ports_unless_set",),
             "a --haproxy service's stats and metrics pages take free ports"),
    Mutation("ingress-failure-traceback", "toolchain/fleet/cluster.py",
             "did not start ({_ingress_failure(exc)}); free", "did not start ({exc}); free",
             ("tests/fleet/test_cluster.py::test_an_ingress_that_cannot_start_is_one_sentence",),
             "an ingress that cannot start is one sentence naming the port"),
    Mutation("haproxy-side-ports-ephemeral", "toolchain/fleet/cluster.py",
             "def _free_port(low: int = 20000, high: int = 30000)", "def _free_port(low: int = 32768, high: int = 60999)",
             ("tests/fleet/test_cluster.py::test_haproxy_side_pages_get_free_ports_unless_set",),
             "HAProxy's side pages take ports outside the ranges Ray's own sockets use"),
    Mutation("loadbench-clients-at-full-priority", "toolchain/fleet/loadbench.py",
             "        lower_priority(load.client_nice)\n", "",
             ("tests/fleet/test_loadbench.py::test_client_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own",),
             "the load's client threads run below the service they measure"),
    Mutation("loadbench-replay-one-text", "toolchain/fleet/loadbench.py",
             "model.embed([texts[(at + j) % len(texts)] for j in range(size)])",
             "model.embed([texts[at % len(texts)]])",
             ("tests/fleet/test_loadbench.py::test_replay_calls_the_runtime_with_the_batch_sizes_the_service_formed",),
             "the in-process baseline replays the batch sizes the service formed"),
    Mutation("loadbench-client-cpu-in-server", "toolchain/fleet/loadbench.py",
             "per(tree), per(tree - own)", "per(tree), per(tree)",
             ("tests/fleet/test_loadbench.py::test_smoke_load_counts_no_wrong_answers",),
             "the load benchmark's server CPU leaves out the clients' (this process's) CPU"),
    Mutation("ddp-module-same-shard", "toolchain/train/module_ddp.py",
             "mine = batch[self.rank :: self.world]", "mine = batch[: len(batch) // self.world]",
             ("tests/train/test_distributed_modules.py::test_two_processes_learn_what_one_does",),
             "under DDP each module-loop process takes its own share of the global batch"),
    Mutation("ddp-module-not-wrapped", "toolchain/train/module_ddp.py",
             "return DistributedDataParallel(module)", "return module",
             ("tests/train/test_distributed_modules.py::test_two_processes_learn_what_one_does",),
             "the module loop averages gradients over processes (DDP)"),
    Mutation("ddp-module-loss-not-reduced", "toolchain/train/module_ddp.py",
             "        dist.all_reduce(total)\n", "        total = total * self.world\n",
             ("tests/train/test_distributed_modules.py::test_two_processes_learn_what_one_does",),
             "the logged loss under DDP is the whole batch's, as 1 process logs it"),
    Mutation("ddp-module-resume-ignored", "toolchain/train/module_stage.py",
             "    resume = resumable(ckpt)\n", "    resume = None\n",
             ("tests/train/test_distributed_modules.py::test_a_ddp_run_that_died_resumes_from_its_checkpoint",),
             "a module run under DDP that died resumes from its last checkpoint"),
    Mutation("ddp-batch-not-global", "toolchain/train/fit.py",
             "    return batch_size // n\n", "    return batch_size\n",
             ("tests/train/test_distributed.py::test_two_processes_learn_what_one_does",),
             "under torchrun the recipe's batch_size is the global batch: N processes learn what 1 does"),
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
