// The artifact's model in the browser: onnxruntime-web (WASM, SIMD, threads where the page is cross-origin
// isolated) and tokenizers.js, both vendored into the site by `toolchain web`, so nothing is fetched from
// any other origin. It mirrors the Python runtime (toolchain/runtime/encoders.py, text.py, feeds.py):
//
//   import { load } from "./toolchain-web.js";
//   const model = await load("models/minilm/");   // the variant `toolchain web` chose (web.json)
//   await model.embed(["a cat", "a kitten"]);     // -> [[...], [...]], pooled and normalised per the manifest
//   await model.classify(["great film"]);          // -> [{label: "positive", score: 0.98}]
//   model.info();                                  // task, variant, threads, latency, max_length, labels
//
// Batches are padded to their longest item; texts over the manifest's max_length are truncated (keeping
// the tokenizer's special tokens) with a warning in model.warnings, as the Python runtime warns.

import * as ort from "./vendor/ort.wasm.min.mjs";
import { Tokenizer } from "./vendor/tokenizers.min.mjs";

const VENDOR = new URL("./vendor/", import.meta.url).href;

// What manifests written before the feeds section meant (runtime/feeds.py DEFAULT_FEEDS).
const DEFAULT_FEEDS = { input_ids: "ids", attention_mask: "mask", token_type_ids: "type_ids" };

// feeds rule -> (ids, mask, typeIds) rows to the row the graph input takes (runtime/feeds.py RULES)
const RULES = {
  ids: (t) => t.ids,
  mask: (t) => t.mask,
  type_ids: (t) => t.typeIds,
  zeros: (t) => t.ids.map((row) => row.map(() => 0)),
  positions: (t) => t.mask.map((row) => { let n = -1; return row.map((m) => Math.max((n += m), 0)); }),
  first_token: (t) => t.mask.map((row) => { const i = row.indexOf(1); return row.map((m, j) => (j === i ? m : 0)); }),
};

// pooling mode (manifest pooling.mode) -> token states (T rows of H) and mask (T) to one vector (H)
const POOLS = {
  mean: (rows, mask) => {
    const out = new Float64Array(rows[0].length); let n = 0;
    rows.forEach((r, t) => { if (mask[t]) { n += 1; r.forEach((v, h) => { out[h] += v; }); } });
    return out.map((v) => v / Math.max(n, 1e-9));
  },
  cls: (rows, mask) => Float64Array.from(rows[Math.max(mask.indexOf(1), 0)]),
  last: (rows, mask) => Float64Array.from(rows[Math.max(mask.lastIndexOf(1), 0)]),
  max: (rows, mask) => {
    const out = new Float64Array(rows[0].length).fill(-Infinity);
    rows.forEach((r, t) => { if (mask[t]) r.forEach((v, h) => { out[h] = Math.max(out[h], v); }); });
    return out;
  },
};

async function fetchOk(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} could not be fetched (HTTP ${response.status}); rebuild the site with 'toolchain web'.`);
  return what === "json" ? response.json() : response.arrayBuffer();
}

async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) return null; // not a secure context: nothing to check with
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function asTexts(texts) {
  const items = typeof texts === "string" ? [texts] : texts;
  if (!Array.isArray(items)) throw new TypeError(`texts must be a string or an array of strings, not ${typeof texts}.`);
  items.forEach((item, i) => {
    if (typeof item !== "string") throw new TypeError(`item ${i} is ${typeof item}, not a string; pass an array of strings.`);
  });
  return items.map((s) => (s.toWellFormed ? s.toWellFormed() : s)); // lone surrogates -> U+FFFD, as the runtime does
}

/** Load the model a site built by `toolchain web` holds at URL (a folder with web.json, manifest.json, tokenizer). */
export async function load(url, { threads } = {}) {
  const base = new URL(url.endsWith("/") ? url : `${url}/`, globalThis.document?.baseURI ?? globalThis.location.href).href;
  const started = performance.now();
  const [web, manifest] = await Promise.all([fetchOk(`${base}web.json`, "json"), fetchOk(`${base}manifest.json`, "json")]);
  const [tokenizerJson, bytes] = await Promise.all([fetchOk(`${base}${web.tokenizer}`, "json"), fetchOk(`${base}${web.file}`)]);
  const digest = await sha256(bytes);
  if (digest !== null && digest !== web.sha256) {
    throw new Error(`${web.file} does not match the sha256 its manifest records; rebuild the site with 'toolchain web'.`);
  }
  const isolated = globalThis.crossOriginIsolated === true;
  ort.env.wasm.wasmPaths = VENDOR;
  ort.env.wasm.numThreads = threads ?? (isolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
  const session = await ort.InferenceSession.create(new Uint8Array(bytes), {
    executionProviders: ["wasm"], graphOptimizationLevel: "all",
  });
  const model = new Model(web, manifest, new Tokenizer(tokenizerJson, {}), session);
  model.loadMs = performance.now() - started;
  return model;
}

export class Model {
  constructor(web, manifest, tokenizer, session) {
    this.web = web;
    this.manifest = manifest;
    this.tokenizer = tokenizer;
    this.session = session;
    this.maxLength = manifest.max_length;
    const tok = { pad_id: 0, padding_side: "right", pad_to_multiple_of: null, pad_batches: true, ...manifest.tokenizer };
    this.pad = tok;
    const feeds = manifest.feeds ?? DEFAULT_FEEDS;
    const missing = session.inputNames.filter((n) => !(n in feeds) || !(feeds[n] in RULES));
    if (missing.length) {
      throw new Error(`the model takes inputs ${missing.join(", ")} that its manifest gives no known feeds rule for; re-export it.`);
    }
    this.fill = Object.fromEntries(session.inputNames.map((n) => [n, RULES[feeds[n]]]));
    this.batchSize = 8;
    this.calls = 0;
    this.lastMs = null;
    this.warnings = [];
  }

  /** What is running: the variant, ONNX Runtime Web's backend and threads, and the last call's latency. */
  info() {
    return {
      task: this.manifest.task, variant: this.web.variant, precision: this.web.precision, file: this.web.file,
      provider: "wasm", threads: ort.env.wasm.numThreads, cross_origin_isolated: globalThis.crossOriginIsolated === true,
      max_length: this.maxLength, labels: this.manifest.labels ?? null, pooling: this.manifest.pooling ?? null,
      calls: this.calls, load_ms: this.loadMs, last_ms: this.lastMs, onnxruntime_web: ort.env.versions?.web ?? null,
    };
  }

  /** Sentence embeddings (n arrays of d numbers), pooled as the manifest says and L2-normalised where it says so. */
  async embed(texts) {
    this.refuseUnless("feature-extraction", "embed");
    const pooling = { mode: "mean", normalize: true, ...this.manifest.pooling };
    if (!(pooling.mode in POOLS)) throw new Error(`pooling mode ${pooling.mode} in the manifest is not known; use ${Object.keys(POOLS).join(", ")}.`);
    return this.run(texts, (out, mask, b) => {
      const [, T, H] = out.dims;
      const rows = Array.from({ length: T }, (_, t) => out.data.subarray((b * T + t) * H, (b * T + t + 1) * H));
      let vec = POOLS[pooling.mode](rows, mask);
      if (pooling.normalize) {
        const norm = Math.max(Math.sqrt(vec.reduce((s, v) => s + v * v, 0)), 1e-12);
        vec = vec.map((v) => v / norm);
      }
      return Array.from(vec);
    });
  }

  /** Class probabilities (n arrays, in the order of the manifest's labels). */
  async scores(texts) {
    this.refuseUnless("text-classification", "classify");
    return this.run(texts, (out, _mask, b) => {
      const C = out.dims[1];
      const logits = Array.from(out.data.subarray(b * C, (b + 1) * C));
      const top = Math.max(...logits);
      const e = logits.map((z) => Math.exp(z - top));
      const sum = e.reduce((s, v) => s + v, 0);
      return e.map((v) => v / sum);
    });
  }

  /** The top label and its probability per text: [{label, score}]. */
  async classify(texts) {
    const probs = await this.scores(texts);
    return probs.map((p) => {
      const i = p.indexOf(Math.max(...p));
      return { label: (this.manifest.labels ?? [])[i] ?? `LABEL_${i}`, score: p[i] };
    });
  }

  refuseUnless(task, method) {
    if (this.manifest.task !== task) {
      throw new Error(`this is a ${this.manifest.task} model; ${method}() needs a ${task} one.`);
    }
  }

  /** Tokenize, run in bounded batches sorted by length (each text alone where the model reads its padding), head. */
  async run(texts, head) {
    const items = asTexts(texts);
    const started = performance.now();
    this.calls += 1;
    this.warnings = [];
    const encoded = items.map((t) => this.encode(t));
    const cut = encoded.filter((e) => e.truncated).length;
    if (cut) {
      const note = `${cut} of ${items.length} inputs exceed the model's maximum of ${this.maxLength} tokens and were truncated.`;
      this.warnings.push(note);
      console.warn(note);
    }
    const order = items.map((_, i) => i).sort((a, b) => items[a].length - items[b].length);
    const step = this.pad.pad_batches ? this.batchSize : 1;
    const results = new Array(items.length);
    for (let start = 0; start < order.length; start += step) {
      const idx = order.slice(start, start + step);
      const batch = this.padded(idx.map((i) => encoded[i]));
      const feeds = {};
      for (const [name, fill] of Object.entries(this.fill)) {
        const rows = fill(batch);
        feeds[name] = new ort.Tensor("int64", BigInt64Array.from(rows.flat(), (v) => BigInt(v)), [rows.length, batch.width]);
      }
      const outputs = await this.session.run(feeds);
      const out = outputs[this.web.output];
      idx.forEach((i, b) => { results[i] = head(out, batch.mask[b], b); });
    }
    this.lastMs = performance.now() - started;
    return results;
  }

  /** One text's ids, type ids and mask, cut to max_length keeping the special tokens the template adds. */
  encode(text) {
    const full = this.tokenizer.encode(text, { return_token_type_ids: true });
    let ids = full.ids, typeIds = full.token_type_ids ?? full.ids.map(() => 0);
    const truncated = ids.length > this.maxLength;
    if (truncated) {
      // the specials the template adds at each end: where the text's own ids sit inside the full encoding
      const inner = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
      const added = ids.length - inner.length;
      const front = Math.max(0, ids.findIndex((_, i) => inner.every((v, j) => ids[i + j] === v)));
      const back = added - front;
      const keep = Math.max(this.maxLength - added, 0);
      const cut = (row) => [...row.slice(0, front + keep), ...row.slice(row.length - back)];
      ids = cut(ids); typeIds = cut(typeIds);
    }
    return { ids, typeIds, truncated };
  }

  /** Rows padded to the batch's longest (or the next multiple of pad_to_multiple_of), on the manifest's side. */
  padded(rows) {
    let width = Math.max(...rows.map((r) => r.ids.length));
    const multiple = this.pad.pad_to_multiple_of;
    if (multiple) width = Math.ceil(width / multiple) * multiple;
    const left = this.pad.padding_side === "left";
    const fill = (row, value) => {
      const pad = new Array(width - row.length).fill(value);
      return left ? [...pad, ...row] : [...row, ...pad];
    };
    return {
      width,
      ids: rows.map((r) => fill(r.ids, this.pad.pad_id)),
      typeIds: rows.map((r) => fill(r.typeIds, 0)),
      mask: rows.map((r) => fill(r.ids.map(() => 1), 0)),
    };
  }
}
