"""The Gradio page of `pops serve`: one tab per operator (upload into its slots), one tab for equations, shared
settings, and a results area that shows the output and every intermediate step as pictures."""

from __future__ import annotations

import gradio as gr

from pops.base.reference import DEFAULT_STEPS
from pops.base.registry import REGISTRY
from pops.core.sampling import SAMPLER_NAMES
from pops.models.model_set import RENDERER_CHOICES
from pops.ui.backend import Backend, RunOutput, Settings

OWN_SAMPLER = "operator's own"  # each operator's saved sampler (unclip unless it was made for another)
EXAMPLES = [
    "texture(object.png, texture.png)",
    "let t = texture(object.png, texture.png)\nscene(t, scene.png)",
    'instruct(object.png, "red")',
    "union(object.png, _)",
    "0.3*object.png + 0.7*texture.png",
]

SYNTAX = """
| write | means |
|---|---|
| `texturing(a.png, wood.png)` | an operator by name (`texture` is short for texturing) |
| `let t = …` then `scene(t, beach.png)` | name a step and reuse it (statements end at a line break or `;`) |
| `instruct(cat.png, "red")` | a quoted word fills a text slot |
| `union(cat.png, _)` | `_` drops a slot: variations that keep only the other input |
| `composition(hat=h.png, pants=p.png)` | slots by name; slots not named are dropped |
| `mean(a.png, b.png)`, `0.3*a.png + 0.7*b.png` | averaging baseline (weights as written) |
| `emb.safetensors` | a saved embedding (e.g. one downloaded from an earlier run) |

Name uploaded files by their file name. Full guide: `docs/EQUATIONS.md`.
"""

CSS = """
.gradio-container { max-width: 1320px !important; margin: auto; }
#header h1 { margin-bottom: 0; }
#header p { margin-top: 4px; opacity: 0.8; }
#status { min-height: 3em; }
.hint { font-size: 0.85em; opacity: 0.75; }
#steps-gallery .caption-label, #result-gallery .caption-label { white-space: normal; font-size: 0.8em; }
"""

THEME_FONT = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
THEME_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def theme():
    # System fonts only: the default Google fonts would be fetched from the internet by every browser.
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", font=THEME_FONT, font_mono=THEME_MONO)


def _settings(models_dir, renderer, seed, guidance, steps, samples, sampler=OWN_SAMPLER) -> Settings:
    """The page's values as sent (an HTTP client may send anything): the backend checks them (Settings.checked)."""
    return Settings(
        models_dir=models_dir if isinstance(models_dir, str) else "",
        renderer=renderer or "auto",
        seed=0 if seed is None else seed,
        guidance_scale=guidance,
        steps=steps,
        num_samples=samples,
        sampler=None if sampler in (None, OWN_SAMPLER) else sampler,
    )


def _show(out: RunOutput):
    """Values for the outputs [result, steps, downloads, record, status, last-run state]."""
    return (
        out.result_images or None,
        out.step_images or None,
        out.downloads or None,
        out.record or None,
        out.status,
        out.replay,
    )


def build_app(backend: Backend, *, default_renderer: str = "auto") -> gr.Blocks:
    # delete_cache: uploads and Gradio's copies older than a day are removed hourly (the runs/ folders stay).
    with gr.Blocks(
        title="pOps — photo-inspired diffusion operators", analytics_enabled=False, delete_cache=(3600, 86400)
    ) as demo:
        gr.Markdown(
            "# pOps · photo-inspired diffusion operators\n"
            "Combine pictures with trained operators — texture an object, join two objects, place one in a scene, "
            "change it with a word — or chain them in an equation. Every step is shown, and every result can be "
            "downloaded as embeddings and reproduced from its record.",
            elem_id="header",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                with gr.Tabs():
                    operator_tabs = [_operator_tab(kind) for kind in REGISTRY]
                    equation, files, run_equation = _equation_tab()
                status, result, step_gallery, resample, downloads = _results_panel()
            with gr.Column(scale=1, min_width=280):
                models, info, renderer, seed, guidance, sampler, steps, samples = _settings_panel(
                    backend, default_renderer
                )
        with gr.Accordion("Record (JSON): reproduce with `pops apply --replay record.json`", open=False):
            record = gr.JSON(elem_id="record")
        last_run = gr.State(None)

        settings = [models, renderer, seed, guidance, steps, samples, sampler]
        outputs = [result, step_gallery, downloads, record, status, last_run]
        common = dict(outputs=outputs, concurrency_id="pops")
        models.change(backend.describe, inputs=[models], outputs=[info], api_visibility="private")

        for kind, (slots, word, button) in zip(REGISTRY, operator_tabs):
            button.click(
                _operator_fn(backend, kind, len(slots), word is not None),
                inputs=[*slots, *([word] if word is not None else []), *settings],
                api_name=kind,
                **common,
            )

        def apply_equation(text, uploaded, *values, progress=gr.Progress(track_tqdm=True)):
            return _show(backend.run_equation(text, uploaded, _settings(*values), progress=True))

        run_equation.click(apply_equation, inputs=[equation, files, *settings], api_name="equation", **common)

        def resample_last(state, *values, progress=gr.Progress(track_tqdm=True)):
            return _show(backend.resample_last(state, _settings(*values), progress=True))

        resample.click(resample_last, inputs=[last_run, *settings], api_name="resample", **common)
    return demo


def _equation_tab():
    with gr.Tab("Equation", id="equation"):
        equation = gr.Textbox(
            label="Equation",
            lines=3,
            elem_id="equation-text",
            placeholder="let t = texture(object.png, texture.png)\nscene(t, scene.png)",
        )
        files = gr.File(
            label="Images and embeddings the equation names (by file name)",
            file_count="multiple",
            file_types=["image", ".safetensors", ".pt"],
            elem_id="equation-files",
        )
        gr.Examples(EXAMPLES, inputs=[equation], label="Examples")
        run_equation = gr.Button("Evaluate", variant="primary", elem_id="run-equation")
        with gr.Accordion("Equation syntax", open=False):
            gr.Markdown(SYNTAX)
    return equation, files, run_equation


def _results_panel():
    status = gr.Markdown("Upload images into an operator's slots, or type an equation.", elem_id="status")
    with gr.Row(equal_height=False):
        result = gr.Gallery(
            label="Result",
            elem_id="result-gallery",
            columns=2,
            height=360,
            preview=True,
            object_fit="contain",
            scale=2,
            format="png",
            interactive=False,
        )
        step_gallery = gr.Gallery(
            label="Every step: inputs, then each operator",
            elem_id="steps-gallery",
            columns=3,
            height=360,
            object_fit="contain",
            scale=3,
            format="png",
            interactive=False,
            fit_columns=False,
        )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=200):
            resample = gr.Button("New seed for the last step", elem_id="resample")
            gr.Markdown(
                "Re-samples only the last operator; the earlier steps come from the cache.",
                elem_classes=["hint"],
            )
        downloads = gr.File(
            label="Embeddings (.safetensors) and record",
            file_count="multiple",
            elem_id="downloads",
            interactive=False,
            scale=3,
        )
    return status, result, step_gallery, resample, downloads


def _settings_panel(backend: Backend, default_renderer: str):
    gr.Markdown("### Settings")
    # Only the folders the server was started with (`pops serve --models DIR ...`): never a free path.
    models = gr.Dropdown(
        backend.models_dirs,
        value=backend.default_models or None,
        label="Models folder",
        elem_id="models-dir",
        info="operators/<kind>/ and renderers/ as `pops demo` saves them; more with `pops serve --models DIR`",
    )
    info = gr.Markdown(backend.describe(backend.default_models), elem_id="models-info")
    renderer = gr.Dropdown(
        list(RENDERER_CHOICES),
        value=default_renderer,
        label="Renderer",
        info="auto: the real renderer if the folder holds one, else the decoder, else retrieval",
    )
    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
    guidance = gr.Slider(
        0,
        15,
        value=0,
        step=0.5,
        label="Guidance scale",
        info="0 = each operator's own (the scale stored with it; else the registry's); 1 = no guidance",
    )
    sampler = gr.Dropdown(
        [OWN_SAMPLER, *SAMPLER_NAMES],
        value=OWN_SAMPLER,
        label="Sampler",
        info="unclip: the reference (25 steps); ddim / dpmpp: deterministic, 2-8 steps",
        elem_id="sampler",
    )
    steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Sampling steps")
    samples = gr.Slider(1, 8, value=1, step=1, label="Samples")
    return models, info, renderer, seed, guidance, sampler, steps, samples


def _operator_tab(kind: str):
    spec = REGISTRY[kind]
    images = [s for s in spec.slots if s.kind == "image"]
    with gr.Tab(kind.capitalize(), id=kind):
        gr.Markdown(f"**{kind}**: {spec.description}.")
        slots = []
        per_row = 4 if len(images) > 3 else len(images)
        height = 150 if len(images) > 3 else 240
        for start in range(0, len(images), per_row):
            with gr.Row():
                for slot in images[start : start + per_row]:
                    slots.append(
                        gr.Image(
                            label=slot.name.replace("_", " "),
                            type="filepath",
                            sources=["upload", "clipboard"],
                            height=height,
                            elem_id=f"{kind}-{slot.name}",
                            buttons=[],
                        )
                    )
        word = None
        if spec.text_slots:
            text_slot = spec.slots[spec.text_slots[0]]
            word = gr.Textbox(
                label=text_slot.name,
                placeholder="an adjective or an art style, e.g. red",
                elem_id=f"{kind}-{text_slot.name}",
            )
        note = (
            "Leave a slot empty to drop it." if len(images) <= 3 else "Fill any of the slots; empty ones are dropped."
        )
        gr.Markdown(note)
        button = gr.Button(f"Run {kind}", variant="primary", elem_id=f"run-{kind}")
    return slots, word, button


def _operator_fn(backend: Backend, kind: str, n_slots: int, has_word: bool):
    names = [s.name for s in REGISTRY[kind].slots if s.kind == "image"]

    def run(*values, progress=gr.Progress(track_tqdm=True)):
        slot_files = dict(zip(names, values[:n_slots]))
        word = values[n_slots] if has_word else None
        settings = _settings(*values[n_slots + has_word :])
        return _show(backend.run_operator(kind, slot_files, word, settings, progress=True))

    run.__name__ = f"run_{kind}"
    return run
