"""The demo's report: one self-contained HTML page (every picture inlined as base64 PNG, no external files).

Sections: the metrics table (pops.evaluation.MetricsTable), a bar plot of the operators against the baselines,
gap closed per operator (the joint model beside the separate operators, when the demo trained it) and the held-out
errors by factor (pops.evaluation.factors), example grids (inputs | pOps | pOps joint |
averaging | ground truth, each embedding drawn by every renderer), one chained equation with its intermediate results,
and stage timings. The page is templates/report.html.j2 (Jinja2, every
value escaped); `example_grids` and `chained_equation` make the pictures.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from diffusers.utils import make_image_grid
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image, ImageDraw

from pops.base.files import atomic_write_text
from pops.base.registry import REGISTRY
from pops.demo.operators import CHOSEN_METHOD, JOINT_METHOD
from pops.demo.plan import sampling_candidates
from pops.equation import apply as apply_equation
from pops.evaluation import row_kind
from pops.evaluation.table import PEER_METHODS

# Bar colours per method (the trained operator stands out; the oracle is the ceiling, drawn pale).
COLOURS = {
    "pops": "#d9480f",
    "pops joint": "#2f9e44",
    "pops chosen": "#7048e8",
    "averaging": "#1c7ed6",
    "input_a": "#868e96",
    "oracle": "#ced4da",
}
# The operator at its other guidance scales ("pops g=s"): lighter oranges, in the table's order.
OTHER_SCALE_COLOURS = ("#ffd8a8", "#f59f00")
BASELINES = ("averaging", "input_a", "oracle")
# The chained equation: the first operator's output is the second one's first input.
CHAIN_OPERATORS = ("texturing", "scene")

_TEMPLATES = Environment(loader=PackageLoader("pops.demo", "templates"), autoescape=select_autoescape(["j2", "html"]))


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bar_plot(table) -> Image.Image:
    """Top-1 and cosine per operator row, grouped by method; the operator's bars carry its spread over seeds."""
    import matplotlib  # heavy, and only the report draws plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.operators()
    # The operator at its own guidance, at the other reported scales, then the baselines.
    methods = [m for m in table.methods() if m.startswith("pops")] + [m for m in BASELINES if m in table.methods()]
    colours = _colours(methods)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(rows))
    for ax, key, title in (
        (axes[0], "top1", "top-1 retrieval of the true class (held out)"),
        (axes[1], "cosine", "cosine to the true target"),
    ):
        for i, method in enumerate(methods):
            cells = [_get(table, r, method) for r in rows]
            values = [getattr(c, key) if c else 0.0 for c in cells]
            errors = [(getattr(c, f"{key}_std") or 0.0) if c else 0.0 for c in cells]
            ax.bar(
                x + (i - (len(methods) - 1) / 2) * width,
                values,
                width,
                yerr=errors,
                capsize=2,
                label=method,
                color=colours[method],
            )
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


def _colours(methods: list[str]) -> dict[str, str]:
    others = [m for m in methods if m not in COLOURS]
    return {m: COLOURS.get(m) or OTHER_SCALE_COLOURS[others.index(m) % len(OTHER_SCALE_COLOURS)] for m in methods}


def _get(table, row: str, method: str):
    """The cell, or None where there is none or it does not apply (n/a: no bar)."""
    try:
        cell = table.get(row, method)
    except KeyError:
        return None
    return cell if cell.top1 is not None else None


def gap_table(table, chosen: dict[str, str] | None = None) -> list[dict]:
    """Per operator row: top-1 of the operator (and of the joint model, None when the demo did not train it), the
    baselines, and gap closed (pops.evaluation.MetricsTable.gap_closed); with `chosen` (operator -> "separate" or
    "joint"), the model chosen on validation and its gap closed."""
    rows = []
    for row in table.operators():
        cells = {m: _get(table, row, m) for m in ("pops", JOINT_METHOD, "averaging", "oracle")}
        if any(cells[m] is None for m in ("pops", "averaging", "oracle")):
            continue
        joint = cells[JOINT_METHOD]
        model = (chosen or {}).get(row_kind(row)) if joint else None
        rows.append(
            {
                "operator": row,
                "separate": cells["pops"].top1,
                "joint": joint.top1 if joint else None,
                "averaging": cells["averaging"].top1,
                "oracle": cells["oracle"].top1,
                "gap_separate": table.gap_closed(row),
                "gap_joint": table.gap_closed(row, JOINT_METHOD) if joint else None,
                "chosen": model,
                "gap_chosen": table.gap_closed(row, CHOSEN_METHOD) if model else None,
            }
        )
    return rows


def peer_table(table) -> list[dict]:
    """Per operator row: what ships (pops chosen, else pops), each peer a user would pick instead and the references,
    by top-1 and gap closed, and the margin of pOps over the best peer."""
    rows = []
    shipped = CHOSEN_METHOD if CHOSEN_METHOD in table.methods() else "pops"
    for row in table.operators():
        peers = {m: _get(table, row, m) for m in PEER_METHODS}
        peers = {m: c for m, c in peers.items() if c is not None and c.top1 is not None}
        ours = _get(table, row, shipped)
        if not peers or ours is None or ours.top1 is None:
            continue
        best = max(peers, key=lambda m: peers[m].top1)
        rows.append(
            {
                "operator": row,
                "pops": ours.top1,
                "gap_pops": table.gap_closed(row, shipped),
                "peers": {m: (c.top1, table.gap_closed(row, m)) for m, c in peers.items()},
                "best_peer": best,
                "margin": ours.top1 - peers[best].top1,
            }
        )
    return rows


def _inline(pictures: list[tuple[str, Image.Image]]) -> list[tuple[str, str]]:
    return [(name, png_data_uri(im)) for name, im in pictures]


def render_report(
    *, table, seconds: dict[str, float], grids: list[dict], equation: dict | None, summary: dict[str, Any]
) -> str:
    """The report page as one HTML string."""
    config = summary.get("config", {})
    inlined = [
        {"title": g["title"], "rows": [{"label": r["label"], "cells": _inline(r["cells"])} for r in g["rows"]]}
        for g in grids
    ]
    return _TEMPLATES.get_template("report.html.j2").render(
        world=summary.get("world", {}),
        encoder=str(summary.get("encoder", "")),
        metrics_table=table.to_html(),  # already escaped by MetricsTable
        candidates=", ".join(f"{g:g}" for g in config.get("guidance_candidates", ())),
        samplers=", ".join(c.label for c in sampling_candidates(config.get("fast_samplers"))),
        chosen=", ".join(f"{k}: {label}" for k, label in (summary.get("sampling") or {}).items()),
        gaps=gap_table(table, summary.get("chosen")),
        peers=peer_table(table),
        choices={k: c for k, c in (summary.get("choices") or {}).items() if c},
        regret=summary.get("regret") or {},
        choice_z=config.get("choice_z", "?"),
        validation_seeds=config.get("validation_seeds", "?"),
        text_tower=summary.get("text_tower"),
        instruct_recipe=config.get("instruct_recipe", "?"),
        has_joint=JOINT_METHOD in table.methods(),
        errors=summary.get("errors") or {},
        joint_chosen=", ".join(f"{k}: {label}" for k, label in (summary.get("joint_sampling") or {}).items()),
        joint_steps=summary.get("joint_steps", 0),
        separate_steps=config.get("steps", 0) * len(summary.get("joint_guidance") or {}),
        registry_scales=", ".join(f"{k} {REGISTRY[k].guidance_scale:g}" for k in table.operators() if k in REGISTRY),
        eval_seeds=config.get("eval_seeds", "?"),
        plot=png_data_uri(bar_plot(table)),
        fidelity=summary.get("decoder_fidelity") or {},
        grids=inlined,
        equation=equation
        and {
            "equation": equation["equation"],
            "steps": [(label, _inline(pictures)) for label, pictures in equation["steps"]],
        },
        chain_operators=CHAIN_OPERATORS,
        seconds=seconds,
        summary=summary,
    )


# ----- the pictures: example grids and the chained equation ---------------------------------------------------------
def word_tile(word: str, size: int) -> Image.Image:
    """A picture of a word, so instruct's inputs show in an image grid."""
    tile = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(tile)
    box = draw.textbbox((0, 0), word, font_size=max(10, size // 7))
    draw.text(((size - box[2]) / 2, (size - box[3]) / 2), word, fill=(20, 20, 20), font_size=max(10, size // 7))
    return tile


def mosaic(images: list, size: int) -> Image.Image:
    """Several inputs (composition's garments) as one square tile: a grid of ceil(sqrt(n)) columns on white."""
    images = [im.convert("RGB") for im in images if im is not None]
    cols = max(1, math.ceil(len(images) ** 0.5))
    rows = max(1, math.ceil(len(images) / cols))
    blank = Image.new("RGB", (1, 1), (255, 255, 255))
    grid = make_image_grid(images + [blank] * (rows * cols - len(images)), rows, cols, resize=size // cols)
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(grid, (0, 0))
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
                methods = (("pOps", row), ("pOps joint", f"{row}/joint"), ("averaging", f"{row}/averaging"))
                for method, key in ((m, k) for m, k in methods if k in outputs):
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


def chained_equation(
    world, operators: dict, renderers: dict, out: Path, *, seed: int = 0, steps: int | None = None
) -> dict | None:
    """One equation through the equation runner, outer(inner(object, texture), place) for CHAIN_OPERATORS
    (inner, outer), on world pictures written to `out`/assets/ (so `pops apply --models OUT` can rerun it); None
    without those operators."""
    if not set(CHAIN_OPERATORS) <= set(operators):
        return None
    inner, outer = CHAIN_OPERATORS
    c = world.config
    shape, texture, place = c.shapes[0], c.textures[min(3, len(c.textures) - 1)], c.scenes[min(1, len(c.scenes) - 1)]
    assets = Path(out) / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    pictures = {
        shape: world.object_image(shape, seed=1),
        texture: world.texture_image(texture, seed=1),
        place: world.scene_image(place, seed=1),
    }
    for name, im in pictures.items():
        im.save(assets / f"{name}.png")
    text = f"{outer}({inner}(assets/{shape}.png, assets/{texture}.png), assets/{place}.png)"
    result = apply_equation(
        text, {k: operators[k] for k in CHAIN_OPERATORS}, seed=seed, base_dir=out, num_inference_steps=steps
    )
    steps = [("inputs", [(n, im) for n, im in pictures.items()])]
    for label, embeds in result.intermediates.items():
        steps.append((label, [(name, r.render(embeds[:1])[0]) for name, r in renderers.items()]))
    return {"equation": text, "steps": steps}


def write_report(path: str | Path, **sections) -> Path:
    """Write the report atomically (a reader never sees half a page); returns its path."""
    return atomic_write_text(path, render_report(**sections))
