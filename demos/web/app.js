// The page: picks a model from site.json, loads it with toolchain-web.js and wires the three views.
// window.site.use(name) loads (once) and returns a model; window.model is the one on show, set once ready.

import { load } from "./toolchain-web.js";

const $ = (id) => document.getElementById(id);
const loaded = new Map();

function ms(value) {
  return `${value.toFixed(value < 10 ? 2 : 0)} ms`;
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  a.forEach((v, i) => { dot += v * b[i]; na += v * v; nb += b[i] * b[i]; });
  return dot / Math.max(Math.sqrt(na * nb), 1e-12);
}

/** Run FN on the model on show, with its latency and any truncation note in the page; errors as one line. */
async function call(latencyId, fn) {
  const model = window.model;
  $("note").textContent = "";
  try {
    const started = performance.now();
    const result = await fn(model);
    const took = performance.now() - started;
    $(latencyId).textContent = `${ms(took)} on ${model.info().variant} (${model.info().threads} thread(s))`;
    $("note").textContent = model.warnings.join(" ");
    return result;
  } catch (err) {
    $(latencyId).innerHTML = "";
    $(latencyId).append(Object.assign(document.createElement("span"), { className: "error", textContent: String(err.message ?? err) }));
    return null;
  }
}

function rows(tbody, cells) {
  $(tbody).replaceChildren(...cells.map((values) => {
    const tr = document.createElement("tr");
    values.forEach((v) => tr.append(Object.assign(document.createElement("td"), { textContent: v })));
    return tr;
  }));
}

$("sim-button").addEventListener("click", async () => {
  const vecs = await call("sim-latency", (m) => m.embed([$("sim-a").value, $("sim-b").value]));
  if (vecs) $("sim-result").textContent = cosine(vecs[0], vecs[1]).toFixed(4);
});

$("search-button").addEventListener("click", async () => {
  const list = $("search-list").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const vecs = await call("search-latency", (m) => m.embed([$("search-query").value, ...list]));
  if (!vecs) return;
  const ranked = list.map((text, i) => [cosine(vecs[0], vecs[i + 1]), text]).sort((a, b) => b[0] - a[0]);
  rows("search-results", ranked.map(([s, text]) => [s.toFixed(4), text]));
});

$("cls-button").addEventListener("click", async () => {
  const texts = $("cls-text").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const out = await call("cls-latency", (m) => m.classify(texts));
  if (out) rows("cls-results", out.map((r, i) => [r.label, r.score.toFixed(4), texts[i]]));
});

async function use(name) {
  const entry = window.site.models.find((m) => m.name === name);
  if (!entry) throw new Error(`no model ${name} in this site; choose one of ${window.site.models.map((m) => m.name).join(", ")}.`);
  if (!loaded.has(name)) loaded.set(name, load(entry.path));
  return loaded.get(name);
}

async function show(name) {
  $("status").textContent = `loading ${name}…`;
  window.model = null;
  try {
    const model = await use(name);
    const info = model.info();
    const views = window.site.models.find((m) => m.name === name).views; // from toolchain/web/pages.py PAGES
    document.querySelectorAll("section").forEach((s) => { s.hidden = !views.includes(s.id); });
    $("status").textContent = `${name}: ${info.task}, variant ${info.variant} (${info.precision}), ` +
      `ONNX Runtime Web ${info.onnxruntime_web ?? ""} on WASM with ${info.threads} thread(s)` +
      `${info.cross_origin_isolated ? "" : " (not cross-origin isolated)"}; at most ${info.max_length} tokens; ` +
      `loaded in ${ms(info.load_ms)}`;
    window.model = model;
  } catch (err) {
    $("status").replaceChildren(Object.assign(document.createElement("span"), { className: "error", textContent: String(err.message ?? err) }));
  }
}

async function offlineReady() {
  // The service worker caches the whole site on its first install; loading the model after that reads it from
  // the cache, so the model is downloaded once. Without a service worker (not a secure context) the page still works.
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("./sw.js");
    await Promise.race([navigator.serviceWorker.ready, new Promise((r) => setTimeout(r, 60_000))]);
    if (!navigator.serviceWorker.controller) { // it claims this page as it activates: then the model comes from its cache
      await new Promise((r) => { navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }); setTimeout(r, 3_000); });
    }
  } catch (err) {
    console.warn(`offline use is off: ${err.message ?? err}`);
  }
}

async function main() {
  const site = await (await fetch("./site.json")).json();
  window.site = { ...site, use };
  const picker = $("model-picker");
  picker.replaceChildren(...site.models.map((m) => Object.assign(document.createElement("option"), { value: m.name, textContent: `${m.name} (${m.task}, ${m.variant})` })));
  picker.addEventListener("change", () => show(picker.value));
  const wanted = new URLSearchParams(location.search).get("model"); // the Gradio demo's card links ?model=NAME
  picker.value = site.models.some((m) => m.name === wanted) ? wanted : site.models[0].name;
  await offlineReady();
  await show(picker.value);
}

main().catch((err) => {
  $("status").replaceChildren(Object.assign(document.createElement("span"), { className: "error", textContent: `the page cannot start: ${err.message ?? err}` }));
});
