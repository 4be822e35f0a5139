"""The model card: per artifact its task, source, variants with their gates, and the recorded bench (/manifest)."""

from __future__ import annotations

import json

from toolchain.runtime import Manifest, ToolchainError
from toolchain.serve.context import Artifact, Ctx
from toolchain.serve.tabs import TABS
from toolchain.serve.ui import gr
from toolchain.serve.widgets import artifact_picker, guarded


def bench_lines(m: Manifest) -> list[str]:
    """Markdown tables of the bench reports the manifest points to (p50 per batch x seq), one per provider."""
    lines = []
    for provider, entry in m.bench.items():
        path = m.root / str((entry or {}).get("json", ""))
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            rows = report["rows"]
            shapes = [(s["batch"], s["seq"]) for s in next(iter(rows.values()))["shapes"]]
        except (OSError, ValueError, KeyError, StopIteration, TypeError):
            lines.append(f"\nbench ({provider}): {path.name} cannot be read; re-run `toolchain bench {m.root}`.")
            continue
        lines += [f"\n**bench** on {provider}, {report.get('threads')} threads, measured {report.get('measured')} "
                  "(p50 ms per batch x seq):", "",
                  "| engine | size | " + " | ".join(f"{b} x {s}" for b, s in shapes) + " |",
                  "|---|---|" + "---|" * len(shapes)]
        for name, row in rows.items():
            cells = " | ".join(f"{s['p50_ms']:.2f}" for s in row["shapes"])
            lines.append(f"| {name} | {row.get('bytes', 0) / 1e6:.1f} MB | {cells} |")
    return lines


def web_links(url: str, arts: list[Artifact]) -> dict[str, str]:
    """Artifact key -> its page on the site `toolchain web --serve` serves at URL, for the artifacts that site
    was built from (its site.json names their directories); the others get no link."""
    import urllib.parse
    import urllib.request

    base = url if url.endswith("/") else url + "/"
    try:
        with urllib.request.urlopen(base + "site.json", timeout=10) as response:
            built = {str(m["artifact"]): str(m["name"]) for m in json.loads(response.read())["models"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ToolchainError(f"no site built by `toolchain web` answers at {base} ({exc}); start one with "
                             "`toolchain web DIR --out SITE --serve`, or leave out --web.") from None
    return {a.key: f"{base}?model={urllib.parse.quote(built[root])}" for a in arts
            if (root := str(a.manifest.root.resolve())) in built}


def card(art: Artifact, web: str | None = None) -> str:
    m, src = art.manifest, art.manifest.source
    lines = [f"### {art.key}",
             f"task **{m.task}** (`{TABS[art.task].slug}`)" + (f", labels: {', '.join(m.labels)}" if m.labels else "")
             + f"; source {src.model or None} ({src.architecture or None}), opset {m.opset}, "
             f"at most {m.max_length} tokens", *(["", f"runs in your browser, offline: [{web}]({web})"] if web else []),
             "",
             "| variant | precision | size | gate | check | latency |", "|---|---|---|---|---|---|"]
    for v in m.variants.values():
        lines.append(f"| {v.name} | {v.precision} | {v.bytes / 1e6:.1f} MB | {'passed' if v.passed else 'FAILED'} | "
                     f"{v.check_summary()} | {v.latency_summary()} |")
    return "\n".join(lines + bench_lines(m))


def chart(art: Artifact) -> str | None:
    """The first bench chart the artifact has, as a file path (the only files the app serves)."""
    for entry in art.manifest.bench.values():
        path = art.manifest.root / str((entry or {}).get("chart", ""))
        if path.is_file():
            return str(path)
    return None


def card_view(ctx: Ctx) -> None:
    arts = list(ctx.arts.values())
    artifact = artifact_picker(arts, "card")
    text = gr.Markdown(card(arts[0], ctx.web.get(arts[0].key)), elem_id="card")
    image = gr.Image(chart(arts[0]), label="bench chart", interactive=False, type="filepath", elem_id="card-chart",
                     buttons=["download", "fullscreen"])  # no "share": nothing leaves this machine

    def manifest(artifact: str | None = None):
        art = ctx.pick(artifact)
        return chart(art), card(art, ctx.web.get(art.key))

    artifact.change(guarded(manifest, (None,)), artifact, [image, text], api_name="manifest")
