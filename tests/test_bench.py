"""The bench's rules: an aligned text space learnt from training classes only, choices kept unless a candidate wins
beyond the noise, and the peers a user would pick instead (the subspace operator, ridge regression)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pops.embeddings.pairs import Pairs
from pops.encoders.text_tower import TextTowerEncoder, describe, fit_text_tower, load_text_tower
from pops.evaluation.choice import keep_unless_better, paired_scores
from pops.evaluation.peers import fit_ridge
from pops.operators.subspace import SubspaceOperators, build_subspace_operator
from pops.world.captions import caption, factors, input_caption

DIM, WIDTH = 24, 8


class Words:
    """A text encoder of fixed random token states per word (the tower's base), for tests."""

    def __init__(self, seed: int = 0):
        self.g, self.table = torch.Generator().manual_seed(seed), {}

    def token_rows(self, texts):
        return [torch.stack([self._word(w) for w in text.split()]) for text in texts]

    def _word(self, word):
        if word not in self.table:
            self.table[word] = torch.randn(WIDTH, generator=self.g)
        return self.table[word]

    def to_config(self):
        return {"type": "minilm"}

    encoder_id = "words"


def test_captions_name_each_class_as_a_photographer_would():
    assert caption("obj=star|tex=zigzag") == "a star made of zigzag"
    assert caption("obj=star+moon") == "a star and a moon"
    assert caption("obj=star|scene=beach") == "a star in the beach"
    assert caption("obj=star|edit=red", "crimson") == "a crimson star"
    assert caption("hat=cap|pants=jeans|left_shoe=boots|right_shoe=boots") == "a person wearing cap, jeans and boots"
    assert factors("obj=star+moon") == {"obj_a": "star", "obj_b": "moon"}
    assert input_caption("tex=wood") == "a patch of wood" and input_caption("word=red") is None


def test_the_text_tower_points_captions_at_their_pictures_and_reads_unseen_words_by_the_same_map(tmp_path):
    """Trained LiT-style on captions of some classes against locked picture embeddings, the tower retrieves the
    pictures of each trained caption; it saves, loads and names itself as an encoder config."""
    g = torch.Generator().manual_seed(1)
    protos = F.normalize(torch.randn(6, DIM, generator=g), dim=-1) * 3 + 5  # the pictures' space, off centre
    images = torch.cat([protos + 0.05 * torch.randn(6, DIM, generator=g) for _ in range(4)])
    image_classes = torch.arange(6).repeat(4)
    words = Words()
    texts = [f"a thing{i}" for i in range(6)]
    tower, losses = fit_text_tower(words.token_rows(texts), torch.arange(6), images, image_classes, steps=100)
    assert losses[-1] < losses[0]
    encoder = TextTowerEncoder(tower, words)
    out = encoder.encode(texts)
    assert out.shape == (6, DIM) and (
        F.normalize(out - tower.image_mean, dim=-1) @ F.normalize(protos - tower.image_mean, dim=-1).T
    ).argmax(1).tolist() == list(range(6))
    rows = encoder.token_rows(["a thing0", "never seen"])
    assert rows[0].shape == (2, DIM) and rows[1].shape == (2, DIM)  # a new word goes through the same map
    encoder.save_pretrained(tmp_path / "tower", trained_on={"texts": 6})
    loaded = TextTowerEncoder(load_text_tower(tmp_path / "tower").tower, words)
    assert torch.allclose(loaded.encode(texts), out)
    assert describe(encoder, ["thing0"], ["thing0", "thing1"], k=1)["thing0"][0][0] == "thing0"


def test_the_choice_keeps_the_default_on_a_tie_within_noise():
    """A candidate replaces the default only when its paired advantage clears z standard errors."""
    default = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1.0])
    within = torch.tensor([1, 1, 1, 1, 0, 1, 0, 1.0])  # one sample better: within the noise
    tie = default.clone()
    scores = paired_scores({"default": default, "within": within, "tie": tie}, "default")
    assert keep_unless_better(scores, "default") == "default"
    clear = torch.ones(8)
    scores = paired_scores({"default": default, "within": within, "clear": clear}, "default")
    assert scores["clear"].diff == 3 / 8 and scores["clear"].diff_se > 0
    assert keep_unless_better(scores, "default") == "clear"
    assert keep_unless_better(scores, "default", z=10.0) == "default"


def _pairs(kind: str, x: list[torch.Tensor], target: torch.Tensor, classes: list[str], ids) -> Pairs:
    n = target.shape[0]
    info = {"classes": classes, "recipes": [{} for _ in range(n)], "input_classes": [[None] * len(x)] * n}
    return Pairs(kind, x, torch.ones(n, len(x), dtype=torch.bool), target, class_ids=torch.tensor(ids), info=info)


def test_ridge_recovers_a_linear_operator_with_its_strength_chosen_on_validation():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2 * DIM, DIM, generator=g)
    gallery = torch.randn(10, DIM, generator=g)
    classes = [f"c{i}" for i in range(10)]

    def split(n):
        a, b = torch.randn(n, DIM, generator=g), torch.randn(n, DIM, generator=g)
        target = torch.cat([a, b], 1) @ w
        ids = (F.normalize(target, dim=-1) @ F.normalize(gallery, dim=-1).T).argmax(1)
        return _pairs("union", [a, b], target, classes, ids.tolist())

    ridge = fit_ridge(split(200), split(50), gallery, classes)
    test = split(50)
    assert F.cosine_similarity(ridge.predict(test), test.target).mean() > 0.9


def test_the_subspace_operator_swaps_the_concept_and_keeps_the_rest(tmp_path):
    """Embeddings made of an object part and a texture part: the texture subspace, built from texts that vary the
    texture alone, moves the reference's texture onto the base's object; saved and loaded as a subspace folder."""
    g = torch.Generator().manual_seed(2)
    objects, textures = torch.randn(4, DIM, generator=g), torch.randn(5, DIM, generator=g)
    textures[:, : DIM // 2] = 0  # textures live in the second half of the space, objects anywhere
    objects[:, DIM // 2 :] = 0
    table = {f"a o{i} made of t{j}": objects[i] + textures[j] for i in range(4) for j in range(5)}
    captions = [None, [(t, t.split()[1]) for t in table]]  # vary the texture; the object is the group

    def embed(texts):
        return torch.stack([table[t] for t in texts])

    op = build_subspace_operator("texturing", captions, embed, torch.zeros(DIM), rank=4)
    out = op.sample([objects[0] + textures[0], objects[1] + textures[3]])
    assert torch.allclose(out[0], objects[0] + textures[3], atol=1e-4)
    SubspaceOperators({"texturing": op}).save_pretrained(tmp_path / "subspace")
    loaded = SubspaceOperators.from_pretrained(tmp_path / "subspace")["texturing"]
    assert torch.allclose(loaded.sample([objects[0] + textures[0], objects[1] + textures[3]]), out)


def test_real_stack_subspace_operators_from_clip_text_run_as_a_models_folder(tmp_path):
    """`pops models subspace` builds the training-free operators from a (tiny) CLIP ViT-bigG text encoder of a
    Kandinsky prior repo, from the shipped word banks' captions; the folder runs as a models folder; bad input is one
    line."""
    from transformers import CLIPTextModelWithProjection

    from pops.models.model_set import ModelSet
    from tests.helpers.cli import run_cli
    from tests.helpers.real_stack import D, text_config, write_hub
    from tests.helpers.tokenizers import write_byte_clip_tokenizer

    hub = write_hub(tmp_path / "hub")
    prior = hub / "kandinsky-2-2-prior"
    tokenizer = write_byte_clip_tokenizer(prior / "tokenizer")
    torch.manual_seed(0)
    CLIPTextModelWithProjection(text_config(tokenizer)).save_pretrained(prior / "text_encoder")
    out = tmp_path / "subspace"
    args = ["--base", prior, "--operator", "texturing", "--operator", "instruct", "--captions", "40", "--rank", "3"]
    result = run_cli("models", "subspace", out, *args)
    assert result.exit_code == 0, result.output
    models = ModelSet(out, load_encoders=False)
    assert models.available() == ["texturing", "instruct"]
    op = models.operator("texturing")
    base, ref = torch.randn(2, D), torch.randn(2, D)
    assert op.sample([base, ref]).shape == (2, D) and op.bases[1].shape == (3, D)
    for bad, words in ((["--operator", "composition"], "no training-free operator"), (["--rank", "0"], "--rank")):
        refused = run_cli("models", "subspace", tmp_path / "other", "--base", prior, *bad)
        assert refused.exit_code != 0 and words in refused.output and len(refused.output.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()
    again = run_cli("models", "subspace", out, "--base", prior)
    assert again.exit_code != 0 and "already exists" in again.output
