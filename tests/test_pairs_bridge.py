"""`build_pairs` / `pops pairs`: generated datasets → training pairs through the embedding cache.

The datasets are made by the real `generate()` runner with scripted stand-ins for the generation models (noise
pictures, fixed boxes, square mattes, synthetic parsed people), so they are in the documented format. The encoders
are a tiny random CLIP (vision + text, written to a folder in the Kandinsky prior's layout and loaded back by
path) and, for the CLI, the embedded EfficientNet-Lite0. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pops.base.registry import COMPOSITION_SLOTS
from pops.generate import storage
from pops.generate.models import Detection, GenerationModels, UndecodableImage
from tests.helpers.cli import run_cli
from tests.helpers.tokenizers import write_byte_clip_tokenizer

D = 32  # the tiny CLIP's embedding width
SIDE = 64  # generated picture side
COUNTS = {"texturing": 2, "union": 2, "scene": 2, "instruct": 3, "composition": 3}


# ----- scripted generation models --------------------------------------------------------------------------------
def noise(*args) -> Image.Image:
    """A noise picture drawn from the call's generator (the last argument), so every call gives other pixels."""
    generator = args[-1]
    pixels = torch.randint(0, 256, (SIDE, SIDE, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def two_boxes(image, queries):
    boxes = [(2, 2, 32, 62), (34, 2, 62, 62)]  # side by side, no overlap
    return [Detection(boxes[i % 2], 0.9) for i in range(len(queries))]


def matte(image: Image.Image) -> np.ndarray:
    """The central 80 % square: room for texture patches at many positions."""
    ys, xs = np.mgrid[0 : image.height, 0 : image.width]
    return ((abs((ys + 0.5) / image.height - 0.5) < 0.4) & (abs((xs + 0.5) / image.width - 0.5) < 0.4)).astype(
        np.float32
    )


class People:
    """ATR-style rows: a person of coloured rectangles and its label map (hat 1, upper clothes 4, pants 6, bag 16)."""

    ROWS = [
        {1: (16, 0, 32, 10), 4: (10, 12, 38, 34), 6: (12, 34, 36, 60)},
        {4: (8, 10, 40, 40), 16: (36, 30, 48, 48)},
        {2: (14, 0, 34, 12), 6: (10, 20, 38, 62)},
    ]

    def __len__(self):
        return len(self.ROWS)

    def row(self, i):
        if i >= len(self.ROWS):
            raise UndecodableImage("no such row")
        img = np.full((64, 48, 3), 230, np.uint8)
        labels = np.zeros((64, 48), np.int64)
        for label, (x0, y0, x1, y1) in self.ROWS[i].items():
            img[y0:y1, x0:x1] = ((label * 37) % 255, (label * 91) % 255, (label * 53) % 255)
            labels[y0:y1, x0:x1] = label
        return Image.fromarray(img), labels


SCRIPTED = GenerationModels(
    text_to_image=noise,
    detector=two_boxes,
    segmenter=matte,
    depth_to_image=noise,
    inpainter=noise,
    human_parsing=People(),
)


# ----- a tiny CLIP in the Kandinsky prior's folder layout --------------------------------------------------------
@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    root = tmp_path_factory.mktemp("tiny-clip")
    tok = write_byte_clip_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=D,
        )
    ).save_pretrained(root / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "image_processor"
    )
    text = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=D,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    CLIPTextModelWithProjection(text).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def encoders(clip_dir):
    from pops.encoders.clip import CLIPImageEncoder, CLIPTextEncoder

    return (
        CLIPImageEncoder.from_pretrained(str(clip_dir), device="cpu"),
        CLIPTextEncoder.from_pretrained(str(clip_dir), device="cpu"),
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    from pops.generate import generate

    root = tmp_path_factory.mktemp("datasets")
    for operator, n in COUNTS.items():
        summary = generate(operator, root / operator, num_samples=n, seed=5, models=SCRIPTED, progress=False)
        assert summary.made == n, (operator, summary)
    return {op: root / op for op in COUNTS}


@pytest.fixture(scope="module")
def built(datasets, encoders, tmp_path_factory):
    """Pairs of every operator, with a shared cache; patches/words per sample kept small."""
    from pops.generate.pairs import build_pairs

    cache = tmp_path_factory.mktemp("cache")
    image_encoder, text_encoder = encoders
    return cache, {
        op: build_pairs(
            path,
            op,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            cache_root=cache,
            patches_per_sample=3,
            words_per_image=4,
            seed=0,
            progress=False,
        )
        for op, path in datasets.items()
    }


def embed(encoder, manifest: dict, role: str) -> torch.Tensor:
    with Image.open(Path(manifest["dir"]) / manifest["images"][role]) as im:
        return encoder.encode([im.convert("RGB")])[0]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5)


# ----- per operator ----------------------------------------------------------------------------------------------
def test_texturing_cuts_patches_per_target_deterministically(built, datasets, encoders):
    from pops.generate.pairs import build_pairs

    cache, all_pairs = built
    pairs, enc = all_pairs["texturing"], encoders[0]
    manifests = list(storage.iter_samples(datasets["texturing"]))
    assert len(pairs) == 2 * 5 * 3  # samples x renders x patches_per_sample, grouped in that order
    obj, texture = pairs.slots
    assert obj.shape == texture.shape == pairs.target.shape == (30, D) and pairs.present.all()
    for s, m in enumerate(manifests):
        base = embed(enc, m, "base")
        for k in range(5):
            rows = slice(s * 15 + k * 3, s * 15 + k * 3 + 3)
            assert all(close(row, base) for row in obj[rows]), "the object input is the SDXL-Turbo image"
            render = embed(enc, m, f"render_{k}")
            assert all(close(row, render) for row in pairs.target[rows])
            # Three different patches of that render, none of them a whole picture.
            patches = texture[rows]
            assert torch.cdist(patches, patches)[~torch.eye(3, dtype=torch.bool)].min() > 1e-3
            assert not any(close(p, render) or close(p, base) for p in patches)
    # Same seed: the same patches, all from the cache. Another seed: other patches, same objects and targets.
    again = build_pairs(
        datasets["texturing"], "texturing", image_encoder=enc, cache_root=cache, patches_per_sample=3, progress=False
    )
    assert torch.equal(again.slots[1], texture) and again.info["cache"]["encoded"] == 0
    other = build_pairs(
        datasets["texturing"],
        "texturing",
        image_encoder=enc,
        cache_root=cache,
        patches_per_sample=3,
        seed=1,
        progress=False,
    )
    assert torch.equal(other.slots[0], obj) and torch.equal(other.target, pairs.target)
    assert not torch.equal(other.slots[1], texture) and other.info["cache"]["encoded"] > 0


def test_union_scene_and_composition_pairs(built, datasets, encoders):
    _, all_pairs = built
    enc = encoders[0]
    union = all_pairs["union"]
    assert len(union) == 2 and union.present.all()
    for i, m in enumerate(storage.iter_samples(datasets["union"])):
        assert close(union.slots[0][i], embed(enc, m, "object_a")) and close(
            union.slots[1][i], embed(enc, m, "object_b")
        )
        assert close(union.target[i], embed(enc, m, "target"))

    scene = all_pairs["scene"]
    assert len(scene) == 4 and scene.present.all()  # two examples per sample: object on white, on another background
    for s, m in enumerate(storage.iter_samples(datasets["scene"])):
        for e, role in enumerate(("object_on_white", "object_on_background")):
            assert close(scene.slots[0][2 * s + e], embed(enc, m, role))
            assert close(scene.slots[1][2 * s + e], embed(enc, m, "background"))
            assert close(scene.target[2 * s + e], embed(enc, m, "target"))

    comp = all_pairs["composition"]
    assert len(comp) == 3 and len(comp.slots) == len(COMPOSITION_SLOTS) == comp.present.shape[1]
    for i, m in enumerate(storage.iter_samples(datasets["composition"])):
        worn = m["meta"]["garments"]
        assert worn and comp.present[i].tolist() == [slot in worn for slot in COMPOSITION_SLOTS]
        for j, slot in enumerate(COMPOSITION_SLOTS):
            if slot in worn:
                assert close(comp.slots[j][i], embed(enc, m, f"slot_{slot}"))
            else:
                assert not comp.slots[j][i].any(), "an absent garment's slot is zeros"
        assert close(comp.target[i], embed(enc, m, "target"))


def test_instruct_draws_words_with_rows_and_alignment_text(built, datasets, encoders, tmp_path):
    from pops.embeddings.pairs import Pairs
    from pops.generate.instruct import sample_instruction

    _, all_pairs = built
    pairs = all_pairs["instruct"]
    image_encoder, text_encoder = encoders
    assert len(pairs) == 3 * 4 and pairs.present.all()
    rows, mask = pairs.slots[1]
    assert rows.shape[:2] == mask.shape and rows.shape[2] == text_encoder.width
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) > 1 and int(lengths.max()) == rows.shape[1]
    for s, m in enumerate(storage.iter_samples(datasets["instruct"])):
        picture = embed(image_encoder, m, "image")
        # The words are those of a generator seeded with (seed, sample index, example): reproducible.
        rng = np.random.default_rng([0, m["index"], 0])
        draws = [sample_instruction(m["meta"]["object"], rng, m["meta"].get("placement", "")) for _ in range(4)]
        for k, (word, text) in enumerate(draws):
            i = 4 * s + k
            assert pairs.info["words"][i] == word
            assert close(pairs.slots[0][i], picture) and close(pairs.target[i], picture)
            expected = text_encoder.token_rows([word])[0]  # BOS, the word's tokens, EOS
            assert int(lengths[i]) == expected.shape[0] and close(rows[i, : lengths[i]], expected)
            assert not rows[i, lengths[i] :].any() and not mask[i, lengths[i] :].any()
            assert close(pairs.align_text[i], text_encoder.encode([text])[0])
            placement = m["meta"].get("placement")
            if placement and not text.startswith(f"A {word} of a"):  # adjectives carry the placement, as the reference
                assert text == f"A {word} {m['meta']['object']} {placement}"
    loaded = Pairs.load(pairs.save(tmp_path / "instruct.safetensors"))
    assert torch.equal(loaded.slots[1][0], rows) and torch.equal(loaded.align_text, pairs.align_text)
    assert loaded.info["words"] == pairs.info["words"] and loaded.info["text_encoder"] == text_encoder.encoder_id


@pytest.mark.parametrize("operator", list(COUNTS))
def test_pairs_train_one_step(built, operator, make_tiny_prior):
    from pops.core.objective import make_training_scheduler, training_loss
    from pops.core.prior import PopsPrior

    pairs = built[1][operator]
    model = PopsPrior(make_tiny_prior(dim=D))
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.trainable_parameters()]
    batch = pairs.batch(torch.arange(min(len(pairs), 8)))
    loss, details = training_loss(
        model, pairs.spec, batch, make_training_scheduler(), generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(loss) and loss > 0
    assert ("align" in details) == (operator == "instruct")
    loss.backward()
    optimiser.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.trainable_parameters()))


# ----- the cache, bad files, bad input ---------------------------------------------------------------------------
def test_a_second_run_encodes_nothing(built, datasets, encoders):
    from pops.generate.pairs import build_pairs

    cache, all_pairs = built
    for op in ("union", "instruct"):
        again = build_pairs(
            datasets[op],
            op,
            image_encoder=encoders[0],
            text_encoder=encoders[1],
            cache_root=cache,
            words_per_image=4,
            progress=False,
        )
        assert again.info["cache"]["encoded"] == 0 and again.info["cache"]["hits"] > 0
        assert torch.equal(again.target, all_pairs[op].target)


def test_undecodable_files_skip_only_their_examples(datasets, encoders, tmp_path):
    from pops.generate.pairs import build_pairs

    data = tmp_path / "texturing"
    shutil.copytree(datasets["texturing"], data)
    manifests = list(storage.iter_samples(data))
    (Path(manifests[0]["dir"]) / "render_2.jpg").write_bytes(b"not a jpeg")
    pairs = build_pairs(data, "texturing", image_encoder=encoders[0], patches_per_sample=2, progress=False)
    assert len(pairs) == (2 * 5 - 1) * 2
    assert pairs.info["skipped_examples"] == 1
    (skip,) = pairs.info["skipped"]
    assert (skip["index"], skip["example"]) == (manifests[0]["index"], 2) and "render_2.jpg" in skip["reason"]
    from pops.embeddings.pairs import Pairs

    loaded = Pairs.load(pairs.save(tmp_path / "texturing.safetensors"))
    assert torch.equal(loaded.slots[1], pairs.slots[1]) and len(loaded) == 18
    # A broken mask takes all of its sample's texturing examples with it.
    (Path(manifests[1]["dir"]) / "mask.png").write_bytes(b"\x89PNG broken")
    pairs = build_pairs(data, "texturing", image_encoder=encoders[0], patches_per_sample=1, progress=False)
    assert len(pairs) == 4 and pairs.info["skipped_examples"] == 6


def test_bad_input_raises(datasets, encoders, tmp_path):
    from pops.generate.pairs import build_pairs

    enc = encoders[0]
    with pytest.raises(ValueError, match="'union' dataset, not 'scene'"):
        build_pairs(datasets["union"], "scene", image_encoder=enc)
    with pytest.raises(ValueError, match="text_encoder"):
        build_pairs(datasets["instruct"], "instruct", image_encoder=enc)
    with pytest.raises(ValueError, match="at least 1"):
        build_pairs(datasets["texturing"], "texturing", image_encoder=enc, patches_per_sample=0)
    with pytest.raises(FileNotFoundError, match="not a generated dataset"):
        build_pairs(tmp_path, "union", image_encoder=enc)
    storage.init_dataset(tmp_path / "empty", {"operator": "union", "seed": 0, "recipe": {}})
    with pytest.raises(ValueError, match="no samples"):
        build_pairs(tmp_path / "empty", "union", image_encoder=enc)


def test_the_pairs_module_needs_no_diffusers():
    """Data tools read and write pairs without the model stack: `import pops.embeddings.pairs` loads no diffusers."""
    import subprocess
    import sys

    code = "import sys, pops.embeddings.pairs; assert 'diffusers' not in sys.modules, 'diffusers imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----- the command -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_reuses_the_embed_cache_and_writes_a_pairs_file(datasets, clip_dir, tmp_path):
    from pops.cli import COMMANDS
    from pops.embeddings.pairs import Pairs
    from pops.generate import generate

    assert "pairs" in COMMANDS  # a command of the `pops` app

    # EfficientNet (the embedded world's encoder): `pops embed` fills the cache, `pops pairs` encodes only patches.
    data, cache = tmp_path / "texturing", tmp_path / "cache"
    generate("texturing", data, num_samples=1, seed=2, models=SCRIPTED, progress=False)
    effnet = ["--resolution", "64", "--fp32", "--no-progress"]
    assert run_cli("embed", str(data), "--out", str(cache), *effnet).exit_code == 0
    out = tmp_path / "pairs" / "texturing.safetensors"
    args = ["pairs", str(data), "--out", str(out), "--cache", str(cache), "--patches-per-sample", "1", *effnet]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "5 texturing pairs from 1 samples, 0 examples skipped; images: 5 encoded, 6 cache hits" in first.stdout
    pairs = Pairs.load(out)
    assert pairs.kind == "texturing" and pairs.target.shape == (5, 1280) and pairs.slots[1].shape == (5, 1280)
    assert pairs.info["image_encoder"].startswith("efficientnet") and pairs.info["patches_per_sample"] == 1
    assert not list(out.parent.glob(".*")), "written atomically: no temporary left"
    assert "already exists" in run_cli(*args).stderr  # an existing pairs file is replaced only on request
    assert "images: 0 encoded, 11 cache hits" in run_cli(*args, "--overwrite").stdout

    # CLIP from a local folder, instruct: word rows and alignment text from the folder's text encoder.
    out = tmp_path / "instruct.safetensors"
    result = run_cli(
        "pairs",
        str(datasets["instruct"]),
        "--out",
        str(out),
        "--encoder",
        "clip",
        "--clip-model",
        str(clip_dir),
        "--words-per-image",
        "2",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    pairs = Pairs.load(out)
    assert len(pairs) == 6 and pairs.align_text.shape == (6, D) and pairs.slots[1][0].shape[0] == 6
    assert pairs.info["image_encoder"] == f"clip-image/{clip_dir.name}/float32"


def test_cli_bad_input_gives_one_line_errors(datasets, tmp_path):
    from pops.cli import COMMANDS

    assert "pairs" in COMMANDS
    cases = [
        (["pairs", str(tmp_path / "missing"), "--out", str(tmp_path / "p.safetensors")], "no such dataset folder"),
        (["pairs", str(tmp_path), "--out", str(tmp_path / "p.safetensors")], "not a generated dataset"),
        (["pairs", str(datasets["union"]), "--out", str(tmp_path)], "is a folder"),
        (
            ["pairs", str(datasets["union"]), "--out", str(tmp_path / "p.safetensors"), "--patches-per-sample", "0"],
            "at least 1",
        ),
        (["pairs", str(datasets["union"]), "--out", str(tmp_path / "p.safetensors"), "--encoder", "vit"], "--encoder"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code != 0, args
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "p.safetensors").exists()
