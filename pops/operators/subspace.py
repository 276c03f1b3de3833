"""A training-free operator: IP-Composer's concept subspaces (Dorfman et al., 2025), the peer an artist would try
before training one.

For a concept c — a texture, a scene, a second object, an edit, a garment — the subspace P_c is spanned by the top
singular vectors of many text embeddings that describe variations of c (captions that differ in c alone, their
common part removed). Composing takes the base picture and swaps its c-component for the reference's:

    e = centre + x_base − P x_base + Σ_c P_c x_c,     x = embedding − centre,  P = the projection on every P_c

(IP-Composer renders e with IP-Adapter; here e goes wherever an operator's output goes). The text embeddings come
from the embedded world's aligned text space (pops.encoders.text_tower) or CLIP ViT-bigG text on the real stack,
where `centre` is 0 and the images and texts share the space. A word input (instruct's) is its own text embedding.

A `SubspaceOperators` folder holds one such operator per kind (pops_config.json with "method": "subspace" and every
kind's settings, subspace.safetensors with the bases), and is a models folder by itself, as a joint folder is: point
`pops apply --models`, `pops eval --models` or `pops serve --models` at it to run every operator training-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pops.base.errors import BadValue
from pops.base.files import atomic_write, atomic_write_json, atomic_write_text, write_folder
from pops.base.readers import read_json, read_safetensors
from pops.base.reference import DEFAULT_SAMPLER, OPERATOR_CONFIG_NAME
from pops.base.registry import OperatorSpec, get_spec
from pops.core.sampling import SamplingConfig, call_sampling
from pops.embeddings.pairs import Batch, Pairs
from pops.encoders import load_encoder
from pops.operators.folder import bundle_encoders, located_encoders
from pops.operators.inputs import prepare_inputs

METHOD = "subspace"
BASES_FILE = "subspace.safetensors"
FORMAT_VERSION = 1


def concept_basis(embeds: torch.Tensor, groups: Sequence, rank: int) -> torch.Tensor:
    """(rank, D) orthonormal rows: the top singular vectors of text embeddings (N, D) that describe variations of a
    concept, each minus the mean of its group (the captions that share everything but the concept)."""
    embeds = embeds.double()
    residual = embeds.clone()
    for key in dict.fromkeys(groups):
        rows = torch.tensor([g == key for g in groups])
        residual[rows] -= embeds[rows].mean(0)
    _, _, vh = torch.linalg.svd(residual, full_matrices=False)
    return vh[:rank].float()


class SubspaceModel(torch.nn.Module):
    """What the inputs are read against: the embedding width, and the width of a word's rows (the text space's)."""

    def __init__(self, embedding_dim: int, text_width: int):
        super().__init__()
        self.embedding_dim, self.text_width = embedding_dim, text_width


class SubspaceOperator:
    """One kind's training-free operator: `bases[i]` (k_i, D) for each input slot i that brings a concept (None for
    the base slot, whose picture keeps everything else; composition has none: every slot is a garment on the
    training targets' mean). Duck-types `pops.Operator` where equations, the UI and the evaluation call it."""

    guidance_folded = True  # no guidance scale means anything to it
    vocabulary = None

    def __init__(
        self,
        kind: str,
        bases: Sequence[torch.Tensor | None],
        centre: torch.Tensor,
        *,
        radius: float = 1.0,
        base_embedding: torch.Tensor | None = None,
        encoder_configs: dict | None = None,
        text_width: int | None = None,
    ):
        self.spec: OperatorSpec = get_spec(kind)
        if len(bases) != self.spec.num_slots:
            raise ValueError(f"{kind} takes {self.spec.num_slots} inputs; {len(bases)} concept bases given")
        self.kind = kind
        self.bases = [None if b is None else b.float() for b in bases]
        self.centre = centre.float().reshape(-1)
        self.radius = float(radius)
        self.base_embedding = None if base_embedding is None else base_embedding.float().reshape(-1)
        self.encoder_configs = dict(encoder_configs or {})
        self.model = SubspaceModel(self.centre.numel(), text_width or self.centre.numel())
        self.sampling = SamplingConfig(DEFAULT_SAMPLER, 1, 1.0, 1)  # what a call with no settings records
        self._encoders: dict[str, Any] = {"image": None, "text": None}
        every = [b for b in self.bases if b is not None]
        self._all = torch.linalg.qr(torch.cat(every).T.double())[0].T.float() if every else None

    # ----- the Operator surface the callers use -------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.centre.numel()

    @property
    def guidance_scale(self) -> float:
        return 1.0

    @property
    def device(self) -> torch.device:
        return self.centre.device

    def _encoder(self, modality: str):
        if self._encoders[modality] is None and self.encoder_configs.get(modality):
            self._encoders[modality] = load_encoder(self.encoder_configs[modality])
        return self._encoders[modality]

    image_encoder = property(lambda self: self._encoder("image"), lambda self, e: self._encoders.update(image=e))
    text_encoder = property(lambda self: self._encoder("text"), lambda self, e: self._encoders.update(text=e))

    def call_config(self, sampling: SamplingConfig | None = None, **values) -> SamplingConfig:
        return call_sampling(sampling, **values).resolve(self.sampling)

    def check_memory(self, batch: int, layout: str = "compact", draws: int | None = None) -> None:
        """Nothing large to allocate: (batch, D) rows at a time."""

    def sampling_flops(self, rows: int, config: SamplingConfig) -> float:
        """A few projections per row: nothing to refuse."""
        return float(rows * self.embedding_dim * sum(b.shape[0] for b in self.bases if b is not None) * 4)

    def to(self, device=None, dtype=None) -> SubspaceOperator:
        return self  # small tensors, on the CPU

    def sample(self, inputs: Sequence[Any], *, batch_size: int | None = None, generator=None, **sampling):
        """The composed embeddings (B, D) of the inputs (as `Operator.sample` takes them; a word is read by the text
        encoder's embedding, in the images' space); the sampling settings are accepted for a common call and change
        nothing (no noise, no guidance)."""
        self.call_config(**{k: v for k, v in sampling.items() if k != "progress"})
        inputs, words = list(inputs), {}
        for i in self.spec.text_slots:
            said = [inputs[i]] if isinstance(inputs[i], str) else inputs[i]
            if isinstance(said, (list, tuple)) and said and all(isinstance(w, str) for w in said):
                if self.text_encoder is None:
                    raise ValueError(f"input {self.spec.slots[i].name!r}: a word needs this operator's text encoder")
                words[i], inputs[i] = self.text_encoder.encode(list(said)).float(), None
        slots, drop = prepare_inputs(self, inputs, batch_size)
        present = ~drop
        for i, embeds in words.items():
            slots[i] = embeds.expand(present.shape[0], -1) if embeds.shape[0] == 1 else embeds
            present[:, i] = True
        return self.compose(slots, present)

    def sample_batch(self, batch: Batch | Pairs, *, generator=None, chunk_size=None, progress=False, **sampling):
        """`sample` over a Batch or Pairs (an absent slot: no input)."""
        if not isinstance(batch, (Batch, Pairs)):
            raise BadValue(f"sample_batch takes a Batch or Pairs, got {type(batch).__name__}")
        self.call_config(**sampling)
        part = batch.batch(torch.arange(len(batch))) if isinstance(batch, Pairs) else batch
        present = torch.ones(part.target.shape[0], self.spec.num_slots, dtype=torch.bool)
        return self.compose(part.slots, present if part.present is None else part.present.bool())

    def compose(self, slots: Sequence[Any], present: torch.Tensor) -> torch.Tensor:
        """e = centre + x_base − P x_base + Σ P_i x_i over the present inputs."""
        values = [self._centred(v) for v in slots]
        rows = next(v.shape[0] for v in values if v is not None)
        base = next((i for i, b in enumerate(self.bases) if b is None), None)
        if base is not None and values[base] is not None:
            x = values[base] * present[:, base : base + 1]
        else:
            x = (self.base_embedding - self.centre).expand(rows, -1) if self.base_embedding is not None else 0.0
        out = torch.zeros(rows, self.embedding_dim) + x
        if self._all is not None:
            out = out - (out @ self._all.T) @ self._all
        for i, basis in enumerate(self.bases):
            if basis is not None and values[i] is not None:
                out = out + ((values[i] @ basis.T) @ basis) * present[:, i : i + 1]
        return self.centre + out

    def _centred(self, value):
        if value is None:
            return None
        if isinstance(value, tuple):  # a word's rows: its direction in the text space, at the pictures' radius
            rows, mask = value
            weights = mask[..., None].float()
            mean = (rows.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return self.radius * F.normalize(mean, dim=-1)
        return value.float() - self.centre

    def settings(self) -> dict:
        return {"encoders": self.encoder_configs, "text_width": self.model.text_width, "radius": self.radius}


class SubspaceOperators:
    """Every kind's subspace operator, saved and loaded as one folder (a models folder by itself)."""

    def __init__(self, operators: dict[str, SubspaceOperator], source: dict | None = None):
        self.operators = dict(operators)
        self.source = source or {}

    def __getitem__(self, kind: str) -> SubspaceOperator:
        try:
            return self.operators[kind]
        except KeyError:
            raise KeyError(f"this subspace folder holds {', '.join(self.operators)}, not {kind!r}") from None

    def save_pretrained(self, folder: str | Path) -> Path:
        tensors, settings = {}, {}
        for kind, op in self.operators.items():
            tensors[f"{kind}.centre"] = op.centre.clone().contiguous()
            if op.base_embedding is not None:
                tensors[f"{kind}.base"] = op.base_embedding.clone().contiguous()
            for i, basis in enumerate(op.bases):
                if basis is not None:
                    tensors[f"{kind}.basis.{i}"] = basis.clone().contiguous()
            settings[kind] = op.settings()
        config = {"format_version": FORMAT_VERSION, "method": METHOD, "operators": settings, "source": self.source}
        card = _card(self)

        def write(tmp: Path) -> None:
            bundle_encoders(config, tmp)
            atomic_write(tmp / BASES_FILE, lambda t: save_file(tensors, t, metadata={"format": "pt"}))
            atomic_write_text(tmp / "README.md", card)
            atomic_write_json(tmp / OPERATOR_CONFIG_NAME, config)

        write_folder(Path(folder), write, commit=OPERATOR_CONFIG_NAME)
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SubspaceOperators:
        folder = Path(folder)
        config = read_json(folder / OPERATOR_CONFIG_NAME, "subspace config")
        if not is_subspace_config(config) or config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder / OPERATOR_CONFIG_NAME}: not a subspace folder of format {FORMAT_VERSION}")
        tensors, _ = read_safetensors(folder / BASES_FILE, "subspace bases")
        operators = {}
        for kind, settings in config["operators"].items():
            try:
                spec = get_spec(kind)
                bases = [tensors.get(f"{kind}.basis.{i}") for i in range(spec.num_slots)]
                operators[kind] = SubspaceOperator(
                    kind,
                    bases,
                    tensors[f"{kind}.centre"],
                    radius=settings.get("radius", 1.0),
                    base_embedding=tensors.get(f"{kind}.base"),
                    encoder_configs=located_encoders(settings.get("encoders"), folder),
                    text_width=settings.get("text_width"),
                )
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"{folder}: the {kind} subspace operator is damaged ({exc})") from None
        return cls(operators, config.get("source"))


def is_subspace_config(config: dict) -> bool:
    return isinstance(config, dict) and config.get("method") == METHOD and isinstance(config.get("operators"), dict)


def build_subspace_operator(
    kind: str,
    captions: Sequence[Sequence[tuple[str, Any]] | None],
    embed: Callable[[list[str]], torch.Tensor],
    centre: torch.Tensor,
    rank: int,
    **settings,
) -> SubspaceOperator:
    """A subspace operator of `kind` from text: `captions[i]`, for each slot i that brings a concept, the captions
    that vary it — (caption, the key of everything else it says) — embedded by `embed` (into the image space) and
    centred on `centre`; None for the base slot."""
    bases = []
    for slot in captions:
        if slot is None:
            bases.append(None)
            continue
        texts, groups = [t for t, _ in slot], [g for _, g in slot]
        bases.append(concept_basis(embed(texts) - centre, groups, rank))
    return SubspaceOperator(kind, bases, centre, **settings)


def _card(folder: SubspaceOperators) -> str:
    rows = "\n".join(
        f"| {kind} | {', '.join(str(b.shape[0]) if b is not None else 'base' for b in op.bases)} |"
        for kind, op in folder.operators.items()
    )
    return (
        "---\nlibrary_name: pops\ntags: [pops, training-free, subspace]\n---\n\n# Training-free operators (concept "
        "subspaces)\n\nIP-Composer's method (Dorfman et al., 2025): each input's concept is projected onto the "
        "subspace spanned by text embeddings that vary that concept, and replaces that component of the base "
        "picture. No training. Written by pops.\n\n| operator | rank per input (base: the picture that keeps the "
        f"rest) |\n|---|---|\n{rows}\n"
    )
