"""Model cards for saved operators (a hub-style README.md with YAML metadata)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from huggingface_hub import ModelCard, ModelCardData

if TYPE_CHECKING:
    from pops.joint import JointOperator
    from pops.operator import Operator

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
| prior | {{ layers }} layers, {{ heads }} heads × {{ head_dim }}, embedding {{ dim }} |
| image encoder | {{ image_encoder }} |
| text encoder | {{ text_encoder }} |

```python
import pops
op = pops.Operator.from_pretrained("path/to/this/folder")
out = op.sample([{{ example }}], guidance_scale={{ guidance }})  # (B, {{ dim }}) raw embeddings
```

Or from the command line: `pops apply --model path/to/this/folder INPUT …`.
{% if training %}
## Training

Trained with `pops train` (accelerate).

| | |
|---|---|
{% for label, value in training %}| {{ label }} | {{ value }} |
{% endfor %}{% endif %}"""


JOINT_TEMPLATE = """---
{{ card_data }}
---

# pOps joint operator: {{ kinds | join(", ") }}

One diffusion prior over {{ dim }}-d image embeddings for {{ kinds | length }} operators (pOps, arXiv 2406.01300;
one model for all operators is the paper's future work), saved by `pops`: each operator's condition rows start with
its own learned operator row.

| operator | inputs (slot order) | guidance | sampler, steps | what it does |
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
        library_name="pops", tags=["pops", "diffusion-prior", "pops-joint", *(f"pops-{op.spec.name}" for op in ops)]
    )
    rows = [
        dict(
            kind=op.spec.name,
            slots=", ".join(f"{s.name} ({s.kind})" for s in op.spec.slots),
            guidance=f"{op.guidance_scale:g}",
            sampler=f"{op.sampler}, {op.num_inference_steps}",
            what=op.spec.description,
        )
        for op in ops
    ]
    encoders = [op.encoder_configs for op in ops]
    card = ModelCard.from_template(
        data,
        template_str=JOINT_TEMPLATE,
        kinds=[op.spec.name for op in ops],
        operators=rows,
        dim=cfg.embedding_dim,
        layers=cfg.num_layers,
        heads=cfg.num_attention_heads,
        head_dim=cfg.attention_head_dim,
        image_encoder=next((e["image"]["type"] for e in encoders if e.get("image")), "none (embeddings in)"),
        text_encoder=next((e["text"]["type"] for e in encoders if e.get("text")), "none"),
        training=(joint.training or {}).get("rows") or [],
    )
    return str(card)


def operator_card(op: Operator) -> str:
    cfg = op.model.prior.config
    spec = op.spec
    data = ModelCardData(library_name="pops", tags=["pops", "diffusion-prior", f"pops-{spec.name}"])
    card = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        kind=spec.name,
        description=spec.description[0].upper() + spec.description[1:] + ".",
        dim=cfg.embedding_dim,
        slots=", ".join(f"{s.name} ({s.kind})" for s in spec.slots),
        guidance=f"{op.guidance_scale:g}",
        layers=cfg.num_layers,
        heads=cfg.num_attention_heads,
        head_dim=cfg.attention_head_dim,
        image_encoder=(op.encoder_configs.get("image") or {}).get("type", "none (embeddings in)"),
        text_encoder=(op.encoder_configs.get("text") or {}).get("type", "none"),
        example=", ".join(s.name for s in spec.slots),
        training=(op.training or {}).get("rows") or [],
    )
    return str(card)
