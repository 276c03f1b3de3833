"""Model cards for saved operators (a hub-style README.md with YAML metadata)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelCardData

if TYPE_CHECKING:
    from pops.operators.joint import JointOperator
    from pops.operators.operator import Operator

TEMPLATE = """---
{{ card_data }}
---

# pOps operator: {{ kind }}

{{ description }}

A diffusion prior over {{ dim }}-d image embeddings (pOps, arXiv 2406.01300), saved by `pops`.

| | |
|---|---|
| inputs (slot order) | {{ slots }} |
| default guidance scale | {{ guidance }} |
| default sampling | {{ sampling }} |
| prior | {{ layers }} layers, {{ heads }} heads × {{ head_dim }}, embedding {{ dim }} |
| image encoder | {{ image_encoder }} |
| text encoder | {{ text_encoder }} |

```python
import pops
op = pops.Operator.from_pretrained("path/to/this/folder")
out = op.sample([{{ example }}], guidance_scale={{ guidance }})  # (B, {{ dim }}) raw embeddings
```

Or from the command line: `pops apply --model path/to/this/folder INPUT …`.
{% if source %}
## Source

Released pOps weights imported with `pops models import`: the same function as the original checkpoint, in the
pops folder format (safetensors). Cite the paper and keep the licences when you share this folder.

| | |
|---|---|
{% for label, value in source %}| {{ label }} | {{ value }} |
{% endfor %}{% endif %}{% if training %}
## Training

{{ training_intro }}

| | |
|---|---|
{% for label, value in training %}| {{ label }} | {{ value }} |
{% endfor %}{% endif %}"""


# Rows of the Source table: key of `op.source` -> label.
SOURCE_ROWS = (
    ("checkpoint", "released checkpoint"),
    ("sha256", "checkpoint sha256"),
    ("license", "licence of the released weights"),
    ("base", "base prior (supplies the clip statistics and the CLIP encoders)"),
    ("base_license", "licence of the base prior"),
    ("paper", "paper"),
    ("weights_dtype", "weights stored as"),
)


JOINT_TEMPLATE = """---
{{ card_data }}
---

# pOps joint operator: {{ kinds | join(", ") }}

One diffusion prior over {{ dim }}-d image embeddings for {{ kinds | length }} operators (pOps, arXiv 2406.01300;
one model for all operators is the paper's future work), saved by `pops`: each operator's condition rows start with
its own learned operator row.

| operator | inputs (slot order) | guidance | sampling | what it does |
|---|---|---|---|---|
{% for op in operators %}| {{ op.kind }} | {{ op.slots }} | {{ op.guidance }} | {{ op.sampler }} | {{ op.what }} |
{% endfor %}

| | |
|---|---|
| prior | {{ layers }} layers, {{ heads }} heads × {{ head_dim }}, embedding {{ dim }} |
| image encoder | {{ image_encoder }} |
| text encoder | {{ text_encoder }} |

```python
import pops
op = pops.Operator.from_pretrained("path/to/this/folder", kind="{{ kinds[0] }}")  # one of its operators
joint = pops.JointOperator.from_pretrained("path/to/this/folder")  # all of them on one copy of the weights
```

Or from the command line: `pops apply --model path/to/this/folder --kind {{ kinds[0] }} INPUT …`; a models folder
with this folder under `operators/` offers its operators to equations, `pops serve` and `pops eval`.
{% if training %}
## Training

Trained with `pops train` (accelerate), on every operator's pairs at once.

| | |
|---|---|
{% for label, value in training %}| {{ label }} | {{ value }} |
{% endfor %}{% endif %}"""


def joint_card(joint: JointOperator) -> str:
    cfg = joint.model.prior.config
    ops = list(joint.operators.values())
    data = ModelCardData(
        library_name="pops", tags=["pops", "diffusion-prior", "pops-joint", *(f"pops-{op.spec.kind}" for op in ops)]
    )
    rows = [
        dict(
            kind=op.spec.kind,
            slots=", ".join(f"{s.name} ({s.kind})" for s in op.spec.slots),
            guidance=f"{op.guidance_scale:g}",
            sampler=sampling_line(op),
            what=op.spec.description,
        )
        for op in ops
    ]
    encoders = [op.encoder_configs for op in ops]
    card = ModelCard.from_template(
        data,
        template_str=JOINT_TEMPLATE,
        kinds=[op.spec.kind for op in ops],
        operators=rows,
        dim=cfg.embedding_dim,
        layers=cfg.num_layers,
        heads=cfg.num_attention_heads,
        head_dim=cfg.attention_head_dim,
        image_encoder=next((e["image"]["type"] for e in encoders if e.get("image")), "none (embeddings in)"),
        text_encoder=next((text_line(op) for op in ops if op.spec.text_slots), "none"),
        training=(joint.training or {}).get("rows") or [],
    )
    return str(card)


def operator_card(op: Operator) -> str:
    cfg = op.model.prior.config
    spec = op.spec
    source = op.source or {}
    data = ModelCardData(
        library_name="pops",
        tags=["pops", "diffusion-prior", f"pops-{spec.kind}"],
        license=source.get("license"),
        base_model=source.get("base") if source.get("base_is_hub_id") else None,
    )
    card = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        kind=spec.kind,
        description=spec.description[0].upper() + spec.description[1:] + ".",
        dim=cfg.embedding_dim,
        slots=", ".join(f"{s.name} ({s.kind})" for s in spec.slots),
        guidance=f"{op.guidance_scale:g}",
        layers=cfg.num_layers,
        heads=cfg.num_attention_heads,
        head_dim=cfg.attention_head_dim,
        image_encoder=(op.encoder_configs.get("image") or {}).get("type", "none (embeddings in)"),
        text_encoder=text_line(op),
        example=", ".join(s.name for s in spec.slots),
        sampling=sampling_line(op),
        training=(op.training or {}).get("rows") or [],
        source=[(label, source[key]) for key, label in SOURCE_ROWS if source.get(key) is not None],
        training_intro=training_intro(op),
    )
    return str(card)


def text_line(op: Operator) -> str:
    """The text encoder, and whether the operator reads a word it never saw as the nearest it was trained on."""
    line = (op.encoder_configs.get("text") or {}).get("type", "none")
    if op.vocabulary is not None:
        line += f"; a word it never saw is read as the nearest of its {len(op.vocabulary)} training words"
    return line


def sampling_line(op: Operator) -> str:
    """How a call with no settings samples: the operator's own sampler and steps (pops.core.sampler.SAMPLERS)."""
    steps = f"{op.num_inference_steps} step{'s' if op.num_inference_steps != 1 else ''}"
    if op.draws > 1:
        steps += f", each output the mean of {op.draws} samples"
    if op.guidance_folded:
        return f"{op.sampler}, {steps}, guidance {op.guidance_scale:g} (guidance folded into the weights)"
    return f"{op.sampler}, {steps}" + (" (the reference's ancestral loop)" if op.sampler == "unclip" else "")


def training_intro(op: Operator) -> str:
    """The first line of the Training section: what made these weights — `pops distill` (naming the teacher and the
    call the student expects), `pops train` with the one-pass objective, or `pops train`."""
    summary = (op.training or {}).get("summary") or {}
    expects = f"`sampler={op.sampler!r}`, {op.num_inference_steps} step(s), guidance {op.guidance_scale:g}"
    if summary.get("method") == "distill":
        teacher = summary.get("teacher") or "(an operator in memory)"
        return (
            f"Distilled with `pops distill` from the teacher `{teacher}`: trained to give the teacher's guided "
            f"{summary.get('teacher_sampler')} {summary.get('teacher_steps')}-step samples (guidance "
            f"{summary.get('teacher_guidance_scale', 0):g}) in {summary.get('student_steps', 1)} pass(es), with no "
            f"unconditional pass. It expects {expects} (its defaults); another guidance scale means nothing to it."
        )
    if summary.get("objective") == "one-pass":
        return (
            "Trained with `pops train` (accelerate) as a one-pass prior (`objective: one-pass`, the ECLIPSE "
            f"objective, Patel et al., CVPR 2024): noise and condition to the embedding in one pass. It expects "
            f"{expects} (its defaults)."
        )
    return "Trained with `pops train` (accelerate)."
