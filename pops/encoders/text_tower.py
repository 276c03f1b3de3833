"""An aligned text space for the embedded world: a text tower trained LiT-style onto the frozen image embeddings.

The paper's instruct reads CLIP text, whose text and image towers share one space: the operator is conditioned on a
word's token rows and pulled towards the text embedding of "A {word} {object} {placement}". The embedded world's two
encoders share nothing (MiniLM's 384-d sentences, EfficientNet's 1280-d pictures), so the world learns the text side
as LiT does ("locked-image tuning", Zhai et al., CVPR 2022): the image embeddings stay locked, and a text tower —
MiniLM's token states (frozen) through a learned linear map into the image space — is trained contrastively to point
each caption at the pictures of its class. Its outputs are what CLIP's text tower gives the real stack:

* `token_rows(texts)`: one (T, dim) row per token, the rows an operator is conditioned on (CLIP's last hidden state);
* `encode(texts)`: the text embedding in the image space itself (CLIP's `text_embeds`), the alignment target: the
  mean of the training pictures plus their typical distance from it, in the caption's direction (the mean of its
  token rows).

Only the captions of training classes train it (pops.world.captions): a held-out word such as a synonym goes through
the same maps, never fitted. Saved as a folder (`save_pretrained`: the weights and tower.json); an operator names it
in its encoder config ({"type": "text-tower", "path": ...}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from pops.base.files import atomic_write, atomic_write_json, tensor_digest, write_folder
from pops.base.readers import read_json, read_safetensors
from pops.encoders import load_encoder, pad_rows

TOWER_CONFIG = "tower.json"
TOWER_WEIGHTS = "tower.safetensors"


def mean_state(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each text's token states over its unmasked tokens: (B, T, width), (B, T) -> (B, width)."""
    weights = mask[..., None].to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TextTower(nn.Module):
    """Token states (B, T, width) and their mask -> token rows (B, T, dim) and text embeddings (B, dim): one learned
    linear map takes every token state into the image space; a text's direction is the mean of its rows."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.token = nn.Linear(width, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        # The image space's centre and typical radius (the training pictures'), and the scale that gives token rows
        # unit spread: set by `fit_text_tower`, saved with the weights.
        self.register_buffer("image_mean", torch.zeros(dim))
        self.register_buffer("image_radius", torch.ones(()))
        self.register_buffer("row_scale", torch.ones(()))

    def rows(self, states: torch.Tensor) -> torch.Tensor:
        return self.token(states) * self.row_scale

    def direction(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The unit direction of each text, seen from the image space's centre: its token rows' mean (the map is
        affine, so that is the row of its tokens' mean state)."""
        return F.normalize(self.token(mean_state(states, mask)), dim=-1)

    def embed(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.image_mean + self.image_radius * self.direction(states, mask)


def fit_text_tower(
    states: list[torch.Tensor],
    classes: torch.Tensor,
    images: torch.Tensor,
    image_classes: torch.Tensor,
    *,
    steps: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    ridge: float = 1e-2,
    seed: int = 0,
) -> tuple[TextTower, list[float]]:
    """Train a tower LiT-style: each caption's token `states` (one (T_i, width) tensor per caption) towards the
    pictures of its class (`classes[i]`), away from every other class, among the locked image embeddings `images`
    of classes `image_classes` (each class's pictures pooled into one unit prototype around the images' centre).
    The map starts at the ridge regression of the captions' mean states onto their prototypes (closed form), then
    takes `steps` AdamW steps on the contrastive loss over batches of `batch_size` captions. Returns (the tower in
    eval mode, the losses)."""
    if not states:
        raise ValueError("no captions to train the text tower on")
    torch.manual_seed(seed)
    padded, mask = pad_rows(states)
    means = mean_state(padded, mask)
    protos, target, centre, radius = _prototypes(images.float(), image_classes, classes)
    tower = TextTower(means.shape[1], protos.shape[1])
    with torch.no_grad():  # ridge start: [means, 1] W = protos[target]
        x = torch.cat([means, torch.ones(len(means), 1)], 1).double()
        gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(gram, x.T @ protos[target].double()).float()
        tower.token.weight.copy_(w[:-1].T)
        tower.token.bias.copy_(w[-1])
    optimizer = torch.optim.AdamW(tower.parameters(), lr=lr, weight_decay=0.0)
    generator, losses = torch.Generator().manual_seed(seed), []
    for _ in range(steps):
        # A batch of captions against the prototypes of the classes they name (in-batch negatives, as CLIP and LiT)
        batch = torch.randperm(len(means), generator=generator)[:batch_size]
        named, labels = torch.unique(target[batch], return_inverse=True)
        logits = tower.logit_scale.exp().clamp(max=100) * F.normalize(tower.token(means[batch]), dim=-1)
        loss = F.cross_entropy(logits @ protos[named].T, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        tower.image_mean.copy_(centre)
        tower.image_radius.copy_(radius)
        tower.row_scale.copy_(1.0 / tower.token(padded)[mask].std().clamp(min=1e-6))
    return tower.eval().requires_grad_(False), losses


def _prototypes(images: torch.Tensor, image_classes: torch.Tensor, classes: torch.Tensor):
    """(one unit prototype per class around the images' centre, each caption's prototype index, the centre, the
    images' mean distance from it)."""
    ids, index = torch.unique(image_classes, return_inverse=True)
    centre = images.mean(0)
    centred = images - centre
    protos = torch.zeros(len(ids), images.shape[1]).index_add_(0, index, F.normalize(centred, dim=-1))
    target = torch.searchsorted(ids, classes).clamp(max=len(ids) - 1)
    if not torch.equal(ids[target], classes):
        raise ValueError("a caption names a class without pictures")
    return F.normalize(protos, dim=-1), target, centre, centred.norm(dim=-1).mean()


class TextTowerEncoder:
    """The TextEncoder (pops.encoders) of a trained tower on its base text encoder (MiniLM): strings -> token rows in
    the image space and text embeddings in it."""

    modality = "text"

    def __init__(self, tower: TextTower, base, path: str | Path | None = None):
        self.tower, self.base, self.path = tower, base, path
        self.width = self.dim = int(tower.image_mean.shape[0])

    @classmethod
    def from_config(cls, config: dict) -> TextTowerEncoder:
        return load_text_tower(config["path"])

    def to_config(self) -> dict:
        if self.path is None:
            raise ValueError("save the text tower (save_pretrained) before naming it in an operator's config")
        return {"type": "text-tower", "path": str(Path(self.path).resolve())}

    @property
    def encoder_id(self) -> str:
        return f"text-tower/{self.base.encoder_id}/{tower_digest(self.tower)}"

    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The base encoder's token states of `texts`, padded: (B, T, width), (B, T) mask."""
        return pad_rows(self.base.token_rows(list(texts)))

    @torch.no_grad()
    def token_rows(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return [self.tower.rows(rows) for rows in self.base.token_rows(texts)]

    @torch.no_grad()
    def encode(self, items: Sequence[str], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        texts = list(items)
        parts = [self.tower.embed(*self.states(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.dim)

    def save_pretrained(self, folder: str | Path, **record) -> Path:
        """The tower's folder (weights and tower.json naming its base encoder, and `record`: what it learnt from),
        written whole or not at all."""
        state = {k: v.detach().contiguous() for k, v in self.tower.state_dict().items()}
        config = {"base": self.base.to_config(), "width": self.tower.token.in_features, "dim": self.dim, **record}

        def write(tmp: Path) -> None:
            atomic_write(tmp / TOWER_WEIGHTS, lambda t: save_file(state, t, metadata={"format": "pt"}))
            atomic_write_json(tmp / TOWER_CONFIG, config)

        write_folder(Path(folder), write, commit=TOWER_CONFIG)
        self.path = Path(folder)
        return Path(folder)


def load_text_tower(folder: str | Path) -> TextTowerEncoder:
    """A saved tower on its base encoder; a damaged folder is one ValueError naming its file."""
    folder = Path(folder)
    config = read_json(folder / TOWER_CONFIG, "text tower config")
    state, _ = read_safetensors(folder / TOWER_WEIGHTS, "text tower weights")
    try:
        tower = TextTower(int(config["width"]), int(config["dim"]))
        tower.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{folder / TOWER_WEIGHTS}: not a text tower of {folder / TOWER_CONFIG} ({exc})") from None
    return TextTowerEncoder(tower.eval().requires_grad_(False), load_encoder(config["base"]), folder)


def tower_digest(tower: TextTower) -> str:
    """A short content hash of a tower's weights (its identity in caches and step keys)."""
    return tensor_digest([v for _, v in sorted(tower.state_dict().items())], length=16)


def describe(tower: TextTowerEncoder, words: Sequence[str], known: Sequence[str], k: int = 3) -> dict[str, list]:
    """Each of `words` with its `k` nearest `known` words through the tower (cosine of the text directions): what
    the report shows of the aligned space for the held-out synonyms."""
    states = tower.states(list(words) + list(known))
    directions = tower.tower.direction(*states)
    query, keys = directions[: len(words)], directions[len(words) :]
    top = (query @ keys.T).topk(min(k, len(known)), dim=1)
    return {
        w: [[known[int(i)], round(float(s), 3)] for s, i in zip(scores, index)]
        for w, scores, index in zip(words, top.values, top.indices)
    }
