"""An operator's vocabulary (pops.operators.vocabulary): the distinct words of its training pairs, a word it never saw
read as the nearest of them, a known word unchanged, saved with the operator."""

from __future__ import annotations

import pytest
import torch

from pops.embeddings.pairs import Pairs
from pops.encoders import pad_rows
from pops.operators.vocabulary import VOCABULARY_FILE, Vocabulary, training_vocabulary

WIDTH = 12


def words(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """n words of 2, 3, 4, … token rows."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2 + i, WIDTH, generator=g) for i in range(n)]


def instruct_pairs(said: list[torch.Tensor], dim: int = 32) -> Pairs:
    rows, mask = pad_rows(said)
    n = len(said)
    present = torch.ones(n, 2, dtype=torch.bool)
    return Pairs("instruct", [torch.randn(n, dim), (rows, mask)], present, torch.randn(n, dim))


def test_the_vocabulary_holds_each_training_word_once():
    known = words()
    vocabulary = training_vocabulary(instruct_pairs([known[i] for i in (2, 0, 2, 1, 0, 0)]))
    assert len(vocabulary) == 3
    got = {tuple(r[m].flatten().tolist()) for r, m in zip(vocabulary.rows, vocabulary.mask)}
    assert got == {tuple(w.flatten().tolist()) for w in known}
    no_text = Pairs("texturing", [torch.randn(2, 8), torch.randn(2, 8)], None, torch.randn(2, 8))
    assert training_vocabulary(no_text) is None
    with pytest.raises(ValueError, match="vocabulary"):
        Vocabulary(torch.zeros(0, 2, WIDTH), torch.zeros(0, 2, dtype=torch.bool))


def test_an_unseen_word_is_read_as_its_nearest_known_word_and_a_known_word_as_itself(tiny_operator, tmp_path):
    from pops.operators.operator import Operator

    known = words()
    op = tiny_operator("instruct", text_width=WIDTH)
    image = torch.randn(1, 32)
    settings = dict(num_inference_steps=3, sampler="ddim", guidance_scale=3.0)

    def sample(word):
        return op.sample([image, [word]], generator=torch.Generator().manual_seed(0), **settings)

    before = {i: sample(w) for i, w in enumerate(known)}
    # A new word near the second known one (its rows moved a little, one token more).
    unseen = torch.cat([known[1] + 0.3 * torch.randn_like(known[1]), known[1][:1]])
    raw = sample(unseen)
    op.vocabulary = training_vocabulary(instruct_pairs(known))
    for i, w in enumerate(known):
        # A known word: the same answer (up to the padding of its rows to the vocabulary's length).
        assert torch.allclose(sample(w), before[i], atol=1e-5)
    assert torch.allclose(sample(unseen), before[1], atol=1e-6) and not torch.allclose(raw, before[1], atol=1e-3)
    # The batch path (Pairs, as the evaluation samples) reads words the same way.
    new, old = instruct_pairs([unseen, known[0]]), instruct_pairs([known[1], known[0]])
    new.slots[0] = old.slots[0]

    def sample_batch(pairs):
        return op.sample_batch(pairs, generator=torch.Generator().manual_seed(0), **settings)

    assert torch.allclose(sample_batch(new), sample_batch(old), atol=1e-5)
    # Saved with the operator: the config counts the words, the file holds them; loaded, it reads words the same.
    op.save_pretrained(tmp_path / "op")
    assert (tmp_path / "op" / VOCABULARY_FILE).is_file()
    loaded = Operator.from_pretrained(tmp_path / "op")
    assert len(loaded.vocabulary) == 3 and torch.equal(loaded.vocabulary.rows, op.vocabulary.rows)
    assert "nearest of its 3 training words" in (tmp_path / "op" / "README.md").read_text()
    # A folder whose config names more words than its file holds is refused, naming the file.
    config = (tmp_path / "op" / "pops_config.json").read_text().replace('"vocabulary": 3', '"vocabulary": 4')
    (tmp_path / "op" / "pops_config.json").write_text(config)
    with pytest.raises(ValueError, match=VOCABULARY_FILE):
        Operator.from_pretrained(tmp_path / "op")
    # Without a vocabulary, no file: the folder holds what it needs, and loads with none.
    op.vocabulary = None
    op.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / VOCABULARY_FILE).exists()
    assert Operator.from_pretrained(tmp_path / "plain").vocabulary is None


def test_a_word_it_never_saw_is_named_in_one_warning(tiny_operator, caplog):
    known = dict(zip(("red", "big", "tilted"), words()))

    class Words:  # a text encoder that knows these three words and one more
        def token_rows(self, texts):
            return [known.get(t, known["red"] + 0.5) for t in texts]

    op = tiny_operator("instruct", text_width=WIDTH)
    op.text_encoder = Words()
    op.vocabulary = training_vocabulary(instruct_pairs(list(known.values())))
    with caplog.at_level("WARNING", logger="pops.operators.inputs"):
        op.sample([torch.randn(1, 32), "big"], num_inference_steps=2)
        assert not caplog.records
        op.sample([torch.randn(2, 32), ["red", "crimson"]], num_inference_steps=2)
    assert [r.getMessage() for r in caplog.records] == [
        "instruct: 'crimson' is not one of the 3 words it was trained on; it reads it as the nearest of them"
    ]
