"""CLIP BPE tokenizers written by hand in the real file layout (vocab.json, merges.txt, tokenizer_config.json)."""

from __future__ import annotations

import json
from pathlib import Path


def write_byte_clip_tokenizer(folder: Path, max_length: int = 77):
    """A CLIP BPE tokenizer with one token per byte character and no merges (any word tokenizes), written in the
    real file layout; ids end with BOS, EOS as in CLIP. Returns it loaded from `folder`."""
    from transformers import CLIPTokenizer

    # CLIP's byte-level alphabet: printable Latin-1 characters stand for themselves, the other bytes for 256 + n.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    return CLIPTokenizer.from_pretrained(str(folder))


def write_tokenizer_files(folder: Path) -> Path:
    """A hand-written CLIP BPE vocabulary: single letters, letters ending a word, and two merged words."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = [
        *letters,
        *(c + "</w>" for c in letters),
        "re",
        "red</w>",
        "ca",
        "cat</w>",
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\nc a\nca t</w>\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return folder
