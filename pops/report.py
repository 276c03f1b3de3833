"""The demo's report: one self-contained HTML page (every picture inlined as base64 PNG, no external files).

Sections: the metrics table (pops.evaluation.MetricsTable), a bar plot of the operators against the baselines,
example grids (inputs | pOps | averaging | ground truth, each embedding drawn by every renderer), one chained
equation with its intermediate results, and stage timings. `example_grids` and `chained_equation` make the pictures.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

# Bar colours per method (the trained operator stands out; the oracle is the ceiling, drawn pale).
COLOURS = {"pops": "#d9480f", "averaging": "#1c7ed6", "input_a": "#868e96", "oracle": "#ced4da"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #212529; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #dee2e6; padding-bottom: 4px; }
table.metrics, table.timings { border-collapse: collapse; font-size: 13px; }
table.metrics td, table.metrics th, table.timings td { border: 1px solid #dee2e6; padding: 4px 8px; text-align: right; }
table.metrics td:first-child { text-align: left; }
table.grid { border-collapse: collapse; margin-bottom: 20px; }
table.grid th { font-size: 12px; font-weight: 600; padding: 2px 6px; }
table.grid td { padding: 3px; text-align: center; font-size: 11px; vertical-align: top; }
table.grid td.label { text-align: left; max-width: 140px; word-break: break-all; color: #495057; }
table.grid img { width: 112px; height: 112px; image-rendering: auto; border: 1px solid #e9ecef; }
.note { color: #495057; font-size: 13px; }
"""


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bar_plot(table) -> Image.Image:
    """Top-1 and cosine per operator row, grouped by method; the operator's bars carry its spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table.operators()
    # The operator at its registry guidance, at the other reported scales, then the baselines.
    methods = [m for m in table.methods() if m.startswith("pops")] + [m for m in ("averaging", "input_a", "oracle") if m in table.methods()]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(rows))
    for ax, key, title in ((axes[0], "top1", "top-1 retrieval of the true class (held out)"), (axes[1], "cosine", "cosine to the true target")):
        for i, method in enumerate(methods):
            cells = [_get(table, r, method) for r in rows]
            values = [getattr(c, key) if c else 0.0 for c in cells]
            errors = [(getattr(c, f"{key}_std") or 0.0) if c else 0.0 for c in cells]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, yerr=errors, capsize=2,
                   label=method, color=_colour(method))  # fmt: skip
        ax.set_xticks(x, rows, rotation=20, ha="right", fontsize=9)
        ax.set_ylim(0, 1.25)  # headroom for the legend
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(len(methods), 4), loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _colour(method: str) -> str:
    if method in COLOURS:
        return COLOURS[method]
    # Other guidance scales of the operator: lighter oranges.
    return "#f59f00" if method.startswith("pops") and method.endswith("3") else "#ffd8a8"


def _get(table, row: str, method: str):
    try:
        return table.get(row, method)
    except KeyError:
        return None


def _grid_html(grid: dict) -> str:
    rows = grid["rows"]
    if not rows:
        return ""
    headers = [name for name, _ in rows[0]["cells"]]
    out = [f'<div class="grid-block"><h3>{html.escape(grid["title"])}</h3>', '<table class="grid">', "<tr><th>class</th>"]
    out += [f"<th>{html.escape(h)}</th>" for h in headers] + ["</tr>"]
    for row in rows:
        cells = "".join(f'<td><img src="{png_data_uri(im)}" alt="{html.escape(name)}"></td>' for name, im in row["cells"])
        out.append(f'<tr><td class="label">{html.escape(row["label"])}</td>{cells}</tr>')
    out.append("</table></div>")
    return "\n".join(out)


def _equation_html(equation: dict | None) -> str:
    if not equation:
        return '<p class="note">(the chained equation needs the texturing and scene operators)</p>'
    out = [f"<p><code>{html.escape(equation['equation'])}</code></p>", '<table class="grid">']
    for label, pictures in equation["steps"]:
        cells = "".join(f'<td><img src="{png_data_uri(im)}"><br>{html.escape(name)}</td>' for name, im in pictures)
        out.append(f'<tr><td class="label">{html.escape(label)}</td>{cells}</tr>')
    out.append("</table>")
    return "\n".join(out)


def _timings_html(seconds: dict[str, float]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f} s</td></tr>" for k, v in seconds.items())
    return f'<table class="timings">{rows}<tr><td><b>total</b></td><td><b>{sum(seconds.values()):.1f} s</b></td></tr></table>'


def _scales(summary: dict) -> str:
    """"1, 2, 3 (chosen: texturing 3, union 2, …)" from the demo summary."""
    candidates = ", ".join(f"{g:g}" for g in summary.get("config", {}).get("guidance_candidates", ()))
    chosen = ", ".join(f"{k} {v:g}" for k, v in (summary.get("guidance") or {}).items())
    return f"{candidates or '?'} (chosen: {chosen or '?'})"


def render_report(*, table, seconds: dict[str, float], grids: list[dict], equation: dict | None, summary: dict[str, Any]) -> str:
    """The report page as one HTML string."""
    world = summary.get("world", {})
    classes = world.get("classes", {})
    class_lines = ", ".join(f"{k}: {v.get('train', 0)} train / {v.get('test', 0)} held-out classes" for k, v in classes.items())
    fidelity = summary.get("decoder_fidelity") or {}
    fidelity_line = (
        f"Decoder pictures re-encoded retrieve their own source embedding top-1 {100 * fidelity['top1']:.0f}% / "
        f"top-5 {100 * fidelity['top5']:.0f}% of the time among {int(fidelity['gallery'])} (chance {100 * fidelity['chance_top1']:.1f}%)."
        if "top1" in fidelity
        else ""
    )
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>pOps — embedded world report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>pOps on the embedded world</h1>",
        f'<p class="note">World: {world.get("shapes", "?")} shapes, {world.get("textures", "?")} textures, '
        f'{world.get("scenes", "?")} scenes, {world.get("edits", "?")} instruct words. {html.escape(class_lines)}. '
        f"Encoder: <code>{html.escape(str(summary.get('encoder', '')))}</code>. "
        "All scores are on held-out combinations that never appeared as a training target; top-1 is among all "
        "candidate classes of the operator (train and held-out).</p>",
        "<h2>Metrics</h2>",
        table.to_html(),
        f'<p class="note">pops: the trained operator at its own guidance scale, the one of '
        f"{html.escape(_scales(summary))} that scored best on validation classes (training classes kept out of "
        "training, never a held-out class); mean ± std over "
        f"{summary.get('config', {}).get('eval_seeds', '?')} sampling seeds. pops g=s: the same operator at guidance "
        "s, one seed, including the registry's scale (the paper's: 8 for texturing and union, 1 — no guidance — for "
        "the others). averaging: the paper's baseline (mean of the input embeddings). input_a: the first input "
        "unchanged. oracle: the true target embedding (the ceiling set by the encoder and the class gallery).</p>",
        f'<img alt="operators vs baselines" src="{png_data_uri(bar_plot(table))}" style="max-width:100%">',
        '<section id="examples">',
        "<h2>Examples (held-out combinations)</h2>",
        f'<p class="note">{html.escape(fidelity_line)}</p>',
        *[_grid_html(g) for g in grids],
        "</section>",
        "<h2>A chained equation</h2>",
        _equation_html(equation),
        "<h2>Stage timings</h2>",
        _timings_html(seconds),
        f'<p class="note">{summary.get("workers", 1)} worker process(es) for operators and decoder, '
        f'{summary.get("threads", "?")} torch thread(s) each; {summary.get("images_encoded", 0)} images '
        f"encoded this run, {summary.get('cache_hits', 0)} read from the cache; operators trained this run: "
        f"{html.escape(', '.join(summary.get('trained', [])) or 'none (reused)')}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


# ----- the pictures: example grids and the chained equation ---------------------------------------------------------
def word_tile(word: str, size: int):
    """A picture of a word, so instruct's inputs show in an image grid."""
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(tile)
    box = draw.textbbox((0, 0), word, font_size=max(10, size // 7))
    draw.text(((size - box[2]) / 2, (size - box[3]) / 2), word, fill=(20, 20, 20), font_size=max(10, size // 7))
    return tile


def mosaic(images: list, size: int):
    """Several inputs (composition's garments) as one square tile."""
    from PIL import Image

    images = [im for im in images if im is not None]
    side = max(1, int(len(images) ** 0.5 + 0.999))
    cell = size // side
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    for i, im in enumerate(images):
        tile.paste(im.convert("RGB").resize((cell, cell)), ((i % side) * cell, (i // side) * cell))
    return tile


def example_grids(world, data: dict, outputs: dict, renderers: dict, rows_per_grid: int = 4) -> list[dict]:
    """Per operator (and synonym set): a few held-out examples, one per class — inputs | pOps | averaging | truth,
    each embedding drawn by every renderer (other guidance scales by the first one). `data`: kind ->
    pops.demo.OperatorData; `outputs`: what pops.demo.evaluate_operators returns next to its table."""
    grids = []
    size = world.config.image_size
    for kind, d in data.items():
        for split, pairs in d.tests.items():
            row = kind if split == "test" else f"{kind} ({split.removeprefix('test_')})"
            if row not in outputs:
                continue
            seen, picks = set(), []
            for i, cid in enumerate(pairs.class_ids.tolist()):
                if cid not in seen:
                    seen.add(cid)
                    picks.append(i)
                if len(picks) == rows_per_grid:
                    break
            rows = []
            for i in picks:
                recipe = pairs.info["recipes"][i]
                inputs, target = world.render(recipe)
                shown = [word_tile(x, size) if isinstance(x, str) else x for x in inputs if x is not None]
                if len(shown) > 3:
                    shown = [mosaic(shown, size)]
                cells = [(f"input {j + 1}", im) for j, im in enumerate(shown)]
                for method, key in (("pOps", row), ("averaging", f"{row}/averaging")):
                    for name, renderer in renderers.items():
                        cells.append((f"{method} · {name}", renderer.render(outputs[key][i : i + 1])[0]))
                    if method == "pOps":  # other guidance scales: the first renderer only, to keep the grid narrow
                        first = next(iter(renderers.items()))
                        for key in (k for k in outputs if k.startswith(f"{row}/g=")):
                            label = f"pOps {key.rsplit('/', 1)[1]} · {first[0]}"
                            cells.append((label, first[1].render(outputs[key][i : i + 1])[0]))
                cells.append(("ground truth", target))
                rows.append({"label": world.target_class(recipe), "cells": cells})
            grids.append({"title": row, "rows": rows})
    return grids


def chained_equation(world, operators: dict, renderers: dict, out: Path, *, seed: int = 0, steps: int = 25) -> dict | None:
    """One equation through the equation evaluator, scene(texturing(object, texture), place), on world pictures
    written to `out`/assets/ (so `pops apply --models OUT` can rerun it); None without those two operators."""
    needed = {"texturing", "scene"}
    if not needed <= set(operators):
        return None
    from pops import equation

    c = world.config
    shape, texture, place = c.shapes[0], c.textures[min(3, len(c.textures) - 1)], c.scenes[min(1, len(c.scenes) - 1)]
    assets = Path(out) / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    pictures = {shape: world.object_image(shape, seed=1), texture: world.texture_image(texture, seed=1), place: world.scene_image(place, seed=1)}
    for name, im in pictures.items():
        im.save(assets / f"{name}.png")
    text = f"scene(texturing(assets/{shape}.png, assets/{texture}.png), assets/{place}.png)"
    result = equation.evaluate(text, {k: operators[k] for k in needed}, seed=seed, base_dir=out, num_inference_steps=steps)
    steps = [("inputs", [(n, im) for n, im in pictures.items()])]
    for label, embeds in result.intermediates.items():
        steps.append((label, [(name, r.render(embeds[:1])[0]) for name, r in renderers.items()]))
    return {"equation": text, "steps": steps}


def write_report(path: str | Path, **sections) -> Path:
    """Write the report atomically (a reader never sees half a page); returns its path."""
    from pops.embeddings_io import atomic_write

    path = Path(path)
    page = render_report(**sections)
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path
