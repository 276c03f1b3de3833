"""`pops generate` and `pops embed` on tiny random models of the real classes, built locally (nothing downloaded).

The tiny models are saved in the `--models-from` layout, so every test loads them through the same loaders the
real run uses: StableDiffusionXLPipeline (SDXL-Turbo), Owlv2ForObjectDetection + Owlv2Processor,
StableDiffusionDepth2ImgPipeline (with a tiny DPT), StableDiffusionXLInpaintPipeline, a tiny IS-Net (RMBG-1.4's
architecture, its weights a model.safetensors that mattes a centred blob), and an ATR-style `datasets` folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pops.base.registry import COMPOSITION_SLOTS, get_spec
from pops.generate import storage
from pops.generate.models import FOLDERS, Detection, GenerationModels, ModelSettings, load_models
from tests.helpers.cli import run_cli
from tests.helpers.images import solid
from tests.helpers.processes import pops_env
from tests.helpers.segmenter import blob_isnet, save_isnet
from tests.helpers.tokenizers import write_byte_clip_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
TINY = ModelSettings(image_size=SIZE, turbo_steps=1, depth_steps=2, inpaint_steps=2, segmenter_size=SIZE)
TINY_CLI = ["--image-size", str(SIZE), "--depth-steps", "2", "--inpaint-steps", "2", "--segmenter-size", str(SIZE)]
# The tiny OWLv2's random boxes often overlap; relax union's box checks for the end-to-end run (they are tested
# with a scripted detector below).
RELAXED_UNION = {"max_iou": "1.0", "min_box_fraction": "0.0", "detect_threshold": "0.0"}


# ---------------------------------------------------------------- tiny components, written in the real layouts
def build_tiny_models(root: Path) -> Path:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionDepth2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessor,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    torch.manual_seed(0)
    tok = write_byte_clip_tokenizer(root / "_tokenizer", 77)
    vocab = len(tok)
    special = dict(bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    text = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
        max_position_embeddings=77,
        **special,
    )
    te1, te2 = CLIPTextModel(text), CLIPTextModelWithProjection(text)
    vae = AutoencoderKL(
        block_out_channels=[16, 32],
        latent_channels=4,
        sample_size=SIZE,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    blocks = dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=SIZE // 2,
        out_channels=4,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
    )
    # SDXL UNets: two text encoders (32 + 32 wide) and the text_time added embedding (6 * 8 + 32 pooled).
    xl = dict(
        blocks,
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        use_linear_projection=True,
    )
    euler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    xl_parts = dict(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok, scheduler=euler)
    StableDiffusionXLPipeline(unet=UNet2DConditionModel(in_channels=4, **xl), **xl_parts).save_pretrained(
        root / FOLDERS["text_to_image"]
    )
    StableDiffusionXLInpaintPipeline(
        unet=UNet2DConditionModel(in_channels=9, **xl), requires_aesthetics_score=False, **xl_parts
    ).save_pretrained(root / FOLDERS["inpainter"])
    # SD2-depth: latents + a depth channel in, one text encoder, a DPT depth estimator.
    dpt = DPTForDepthEstimation(
        DPTConfig(
            image_size=SIZE,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=37,
            neck_hidden_sizes=[8, 16, 16, 32],
            fusion_hidden_size=16,
            backbone_out_indices=(0, 1, 2, 3),
        )
    )
    StableDiffusionDepth2ImgPipeline(
        vae=vae,
        text_encoder=te1,
        tokenizer=tok,
        unet=UNet2DConditionModel(in_channels=5, cross_attention_dim=32, **blocks),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False),
        depth_estimator=dpt,
        feature_extractor=DPTImageProcessor(size={"height": SIZE, "width": SIZE}, keep_aspect_ratio=False),
    ).save_pretrained(root / FOLDERS["depth_to_image"])
    # OWLv2 with 16-token queries. At random init the box head gives degenerate boxes and the per-box logit shift
    # swamps the query term (every box prefers the first query); zeroing both gives boxes on their patches and
    # labels that depend on the query, as trained weights do.
    owl = Owlv2ForObjectDetection(
        Owlv2Config(
            text_config=dict(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=16,
                **special,
            ),
            vision_config=dict(
                image_size=SIZE,
                patch_size=8,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
            ),
            projection_dim=32,
        )
    )
    torch.nn.init.zeros_(owl.box_head.dense2.weight)
    torch.nn.init.zeros_(owl.box_head.dense2.bias)
    torch.nn.init.zeros_(owl.class_head.logit_shift.weight)
    torch.nn.init.zeros_(owl.class_head.logit_shift.bias)
    owl.save_pretrained(root / FOLDERS["detector"])
    owl_tok = write_byte_clip_tokenizer(root / "_owl_tokenizer", 16)
    Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": SIZE, "width": SIZE}), tokenizer=owl_tok
    ).save_pretrained(root / FOLDERS["detector"])
    # The segmenter: RMBG-1.4's architecture, a few channels wide, its weights as plain tensors.
    save_isnet(blob_isnet(), root / FOLDERS["segmenter"] / "model.safetensors")
    build_human_parsing(root / FOLDERS["human_parsing"])
    return root


def person(labels: dict[int, tuple[int, int, int, int]], size=(48, 64)) -> tuple[Image.Image, Image.Image]:
    """A synthetic parsed person: coloured rectangles, and an ATR label mask with the same rectangles."""
    w, h = size
    img = np.full((h, w, 3), 230, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for label, (x0, y0, x1, y1) in labels.items():
        img[y0:y1, x0:x1] = ((label * 37) % 255, (label * 91) % 255, (label * 53) % 255)
        mask[y0:y1, x0:x1] = label
    return Image.fromarray(img), Image.fromarray(mask, mode="L")


ATR_ROWS = [
    {
        1: (16, 0, 32, 8),
        11: (18, 8, 30, 16),
        4: (10, 16, 38, 36),
        6: (12, 36, 36, 56),
        9: (12, 56, 22, 64),
        10: (26, 56, 36, 64),
    },
    {11: (18, 8, 30, 16)},  # a face only: no garment, rejected
    {2: (14, 0, 34, 10), 7: (8, 14, 40, 58), 16: (38, 30, 48, 46)},
]


def build_human_parsing(folder: Path) -> None:
    import io

    import datasets

    rows = {"image": [], "mask": []}
    for labels in ATR_ROWS:
        img, mask = person(labels)
        rows["image"].append(img)
        rows["mask"].append(mask)
    _, good_mask = person(ATR_ROWS[0])
    buf = io.BytesIO()
    good_mask.save(buf, format="PNG")
    rows["image"].append({"bytes": b"\x89PNG this is not an image", "path": None})  # undecodable: skipped, logged
    rows["mask"].append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


def tiny_models(models_dir: Path, operator: str) -> GenerationModels:
    from pops.generate import get_recipe

    return load_models(get_recipe(operator).REQUIRES, models_from=models_dir, settings=TINY, device="cpu")


def check_dataset(out: Path, operator: str) -> list[dict]:
    """Everything docs/DATA_FORMAT.md promises about a generated folder; returns the manifests."""
    info = storage.read_dataset_info(out)
    assert info["format"] == storage.FORMAT and info["operator"] == operator
    assert info["slots"] == list(get_spec(operator).slot_names)
    manifests = list(storage.iter_samples(out))
    for m in manifests:
        folder = Path(m["dir"])
        assert folder == storage.sample_dir(out, m["index"]) and m["operator"] == operator
        for name in [*m["images"].values(), *m["assets"].values()]:
            with Image.open(folder / name) as im:
                im.load()
        for name in m["images"].values():
            assert Image.open(folder / name).mode == "RGB"
        assert m["examples"], "every sample lists its training examples"
        for ex in m["examples"]:
            assert set(ex["inputs"]) == set(get_spec(operator).slot_names)
            assert ex["target"] in m["images"]
            for value in ex["inputs"].values():
                if isinstance(value, str):
                    assert value in m["images"]
                elif isinstance(value, dict):  # texturing: a patch cut at train time
                    assert value["patch_of"] in m["images"] and value["mask"] in m["assets"]
    return manifests


# ---------------------------------------------------------------- word banks and the texture patch
def test_word_banks_have_the_papers_sizes_and_no_duplicates():
    from pops.generate.words import load_words, place_of

    sizes = {name: len(load_words(name)) for name in ("objects", "placements", "textures", "adjectives", "art_types")}
    assert 250 <= sizes["objects"] <= 400 and 20 <= sizes["placements"] <= 40 and 280 <= sizes["textures"] <= 400
    assert 55 <= sizes["adjectives"] <= 65 and 35 <= sizes["art_types"] <= 45
    for name in sizes:
        words = load_words(name)
        assert len(set(words)) == len(words), name
        assert all(w == w.strip() and w for w in words)
    assert place_of("on a wooden table") == "table"
    with pytest.raises(ValueError, match="unknown word bank"):
        load_words("nouns")


def test_cut_texture_patch_lies_inside_the_mask():
    from pops.generate import cut_texture_patch

    h, w = 40, 50
    ys, xs = np.mgrid[0:h, 0:w]
    # Pixel values encode their own coordinates, so a patch tells where it was cut.
    image = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))
    mask = ((xs - 30) ** 2 + (ys - 20) ** 2 < 12**2).astype(np.uint8) * 255
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(20):
        patch = cut_texture_patch(image, mask, 8, rng)
        assert patch.size == (8, 8)
        arr = np.asarray(patch)
        assert (mask[arr[..., 1], arr[..., 0]] == 255).all()
        corners.add((int(arr[0, 0, 0]), int(arr[0, 0, 1])))
    assert len(corners) > 5, "positions are drawn at random"
    # Too big to fit: the largest square inside the disc (side 16 for radius 12) instead.
    big = cut_texture_patch(image, mask, 100, np.random.default_rng(1))
    assert 14 <= big.width == big.height <= 17
    assert (mask[np.asarray(big)[..., 1], np.asarray(big)[..., 0]] == 255).all()
    # Same rng state, same patch; a mask of another size is resized to the image.
    a = cut_texture_patch(image, mask, 6, np.random.default_rng(5))
    b = cut_texture_patch(image, Image.fromarray(mask).resize((100, 80), Image.NEAREST), 6, np.random.default_rng(5))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="no pixel inside"):
        cut_texture_patch(image, np.zeros((h, w)), 8, rng)


# ---------------------------------------------------------------- every recipe, end to end, on tiny models
@pytest.mark.slow
@pytest.mark.parametrize("operator", ["texturing", "union", "scene", "instruct", "composition"])
def test_each_generator_makes_samples_in_the_documented_format(operator, models_dir, tmp_path):
    from pops.generate import generate, get_recipe
    from pops.generate.recipe import config_from_options

    recipe = get_recipe(operator)
    cfg = config_from_options(recipe.Config, RELAXED_UNION if operator == "union" else {})
    n = len(ATR_ROWS) + 1 if operator == "composition" else 3
    out = tmp_path / operator
    summary = generate(
        operator, out, num_samples=n, seed=7, models=tiny_models(models_dir, operator), config=cfg, progress=False
    )
    assert summary.failed == 0 and summary.made + summary.rejected == n and summary.skipped == 0
    manifests = check_dataset(out, operator)
    assert len(manifests) == summary.made
    rejections = list(storage.iter_rejections(out))
    assert len(rejections) == summary.rejected and all(r["reason"] for r in rejections)
    if operator == "composition":
        from pops.generate.composition import ATR_LABELS

        # Row 1 has no garment, row 3 cannot be decoded; rows 0 and 2 give samples.
        assert summary.made == 2
        reasons = sorted(r["reason"] for r in rejections)
        assert any("cannot decode" in r for r in reasons) and any("no clothing label" in r for r in reasons)
        for m in manifests:
            labels = ATR_ROWS[m["meta"]["row"]]
            inputs = m["examples"][0]["inputs"]
            present = [slot for slot in COMPOSITION_SLOTS if ATR_LABELS[slot] in labels]
            assert [s for s in COMPOSITION_SLOTS if inputs[s]] == present == m["meta"]["garments"]
            assert Image.open(Path(m["dir"]) / m["images"]["target"]).size == (64, 64)  # padded to a square
        return
    assert summary.made == n
    m = manifests[0]
    images = {role: Image.open(Path(m["dir"]) / name) for role, name in m["images"].items()}
    assert all(im.size == (SIZE, SIZE) for im in images.values())
    if operator == "texturing":
        assert sorted(images) == ["base"] + [f"render_{k}" for k in range(5)]
        for r in m["meta"]["renders"]:
            assert 1 <= len(r["attributes"]) <= 5 and r["prompt"].startswith(f"A {m['meta']['object']} made from ")
        from pops.generate import cut_texture_patch

        patch = cut_texture_patch(
            images["render_0"], Image.open(Path(m["dir"]) / m["assets"]["mask"]), 8, np.random.default_rng(0)
        )
        assert 1 <= patch.width <= 8
    if operator == "union":
        a, b = m["meta"]["objects"]
        assert a != b and m["meta"]["prompt"].startswith(f"A photo of {a} and a {b}")
        assert Image.open(Path(m["dir"]) / m["assets"]["object_a_cutout"]).mode == "RGBA"
        # Pasted on white: the corners of the object inputs are white.
        assert np.asarray(images["object_a"])[[0, 0, -1, -1], [0, -1, 0, -1]].min() >= 250
    if operator == "scene":
        assert m["meta"]["background_prompt"] == f"A photo of empty {m['meta']['place']}"
        on_white = np.asarray(images["object_on_white"])
        assert on_white[0, 0].min() >= 250  # outside the (centred) object: white
    if operator == "instruct":
        assert m["meta"]["prompt"].startswith(f"A photo of a {m['meta']['object']}")


# ---------------------------------------------------------------- recipe logic with scripted models
def centred_disc(image: Image.Image) -> np.ndarray:
    ys, xs = np.mgrid[0 : image.height, 0 : image.width]
    r = np.hypot((ys + 0.5) / image.height - 0.5, (xs + 0.5) / image.width - 0.5)
    return (r < 0.35).astype(np.float32)


def test_union_rejects_with_a_reason_and_keeps_the_rest(tmp_path):
    from pops.generate import generate

    def detector(image, queries):
        # Sample by sample, through the prompt's objects: missing, overlapping, tiny, or fine.
        mode = detector.modes[detector.calls % len(detector.modes)]
        detector.calls += 1
        if mode == "missing":
            return [Detection((0, 0, 30, 30), 0.9), Detection((34, 34, 64, 64), 0.05)]
        if mode == "overlap":
            return [Detection((0, 0, 40, 40), 0.9), Detection((10, 10, 50, 50), 0.9)]
        if mode == "tiny":
            return [Detection((0, 0, 4, 4), 0.9), Detection((34, 34, 64, 64), 0.9)]
        return [Detection((0, 0, 30, 30), 0.9), Detection((34, 34, 64, 64), 0.9)]

    detector.modes, detector.calls = ["missing", "overlap", "tiny", "ok"], 0
    models = GenerationModels(text_to_image=solid, detector=detector, segmenter=centred_disc)
    summary = generate("union", tmp_path, num_samples=4, seed=0, models=models, progress=False)
    assert (summary.made, summary.rejected) == (1, 3)
    reasons = {r["index"]: r["reason"] for r in storage.iter_rejections(tmp_path)}
    assert "not detected" in reasons[0] and "overlap" in reasons[1] and "too small" in reasons[2]
    log = [json.loads(line) for line in (tmp_path / "logs" / "rank-0.jsonl").read_text().splitlines()]
    assert [(e["index"], e["status"]) for e in log] == [(0, "rejected"), (1, "rejected"), (2, "rejected")]
    (m,) = storage.iter_samples(tmp_path)
    assert m["index"] == 3 and m["meta"]["iou"] == 0.0
    # Rejected indices are done too: a rerun calls no model at all.
    again = generate("union", tmp_path, num_samples=4, seed=0, models=models, progress=False)
    assert (again.made, again.rejected, again.skipped, detector.calls) == (0, 0, 4, 4)


def test_generate_needs_its_models_and_a_matching_folder(tmp_path):
    from pops.generate import generate

    with pytest.raises(ValueError, match="needs these models.*detector"):
        generate("union", tmp_path, num_samples=2, models=GenerationModels(text_to_image=solid))
    generate("instruct", tmp_path, num_samples=1, seed=1, models=GenerationModels(text_to_image=solid), progress=False)
    with pytest.raises(ValueError, match="different seed"):
        generate("instruct", tmp_path, num_samples=1, seed=2, models=GenerationModels(text_to_image=solid))
    with pytest.raises(ValueError, match="different operator"):
        generate(
            "scene",
            tmp_path,
            num_samples=1,
            seed=1,
            models=GenerationModels(text_to_image=solid, segmenter=centred_disc, inpainter=lambda *a: a[0]),
        )


# ---------------------------------------------------------------- resumption
def test_rerun_makes_only_what_is_missing_and_ignores_leftover_temp_files(tmp_path):
    from pops.generate import generate

    prompts: list[str] = []

    def counting(prompt, generator):
        prompts.append(prompt)
        return solid(prompt, generator)

    models = GenerationModels(text_to_image=counting)
    first = generate("instruct", tmp_path, num_samples=6, seed=3, models=models, progress=False)
    assert (first.made, len(prompts)) == (6, 6)
    before = {m["index"]: m for m in storage.iter_samples(tmp_path)}
    pixels = {i: np.asarray(Image.open(Path(m["dir"]) / m["images"]["image"])) for i, m in before.items()}
    mtimes = {i: (Path(m["dir"]) / "sample.json").stat().st_mtime_ns for i, m in before.items()}

    # Sample 2 deleted; sample 4 killed mid-write (image there, manifest only as a temp file); a stray temp in 5.
    import shutil

    shutil.rmtree(storage.sample_dir(tmp_path, 2))
    d4 = storage.sample_dir(tmp_path, 4)
    os.replace(d4 / "sample.json", d4 / ".sample.json.tmp-999-deadbeef")
    (storage.sample_dir(tmp_path, 5) / ".image.jpg.tmp-999-cafebabe").write_bytes(b"half an image")
    (d4 / ".tmp-image.jpg.k3x9.part").write_bytes(b"half an image, as pops.base.files names its temporaries")
    assert sorted(m["index"] for m in storage.iter_samples(tmp_path)) == [0, 1, 3, 5]

    prompts.clear()
    second = generate("instruct", tmp_path, num_samples=6, seed=3, models=models, progress=False)
    assert (second.made, second.skipped, second.rejected) == (2, 4, 0)
    assert prompts == [before[2]["meta"]["prompt"], before[4]["meta"]["prompt"]]
    after = {m["index"]: m for m in storage.iter_samples(tmp_path)}
    assert sorted(after) == list(range(6))
    for i in (2, 4):  # remade identically: sample i depends on (seed, i) only
        assert {k: v for k, v in after[i].items() if k != "dir"} == {k: v for k, v in before[i].items() if k != "dir"}
        assert np.array_equal(np.asarray(Image.open(Path(after[i]["dir"]) / "image.jpg")), pixels[i])
    for i in (0, 1, 3, 5):
        assert (Path(after[i]["dir"]) / "sample.json").stat().st_mtime_ns == mtimes[i]
    assert not list(d4.glob(".*.tmp-*")), "the remade sample's folder is cleaned of temporaries"
    assert not list(d4.glob(".tmp-*.part")), "the remade sample's folder is cleaned of temporaries"
    # Growing the dataset later makes only the new indices.
    prompts.clear()
    third = generate("instruct", tmp_path, num_samples=8, seed=3, models=models, progress=False)
    assert (third.made, third.skipped, len(prompts)) == (2, 6, 2)


def test_a_failing_sample_is_logged_and_retried_next_run(tmp_path):
    from pops.generate import generate

    def flaky(prompt, generator):
        if flaky.broken and "photo" in prompt and len(flaky.seen) == 1:
            flaky.seen.append(prompt)
            raise RuntimeError("CUDA out of memory (simulated)")
        flaky.seen.append(prompt)
        return solid(prompt, generator)

    flaky.broken, flaky.seen = True, []
    models = GenerationModels(text_to_image=flaky)
    summary = generate("instruct", tmp_path, num_samples=3, seed=0, models=models, progress=False)
    assert (summary.made, summary.failed) == (2, 1)
    (entry,) = [json.loads(line) for line in (tmp_path / "logs" / "rank-0.jsonl").read_text().splitlines()]
    assert entry["index"] == 1 and entry["status"] == "failed" and "out of memory" in entry["reason"]
    assert storage.sample_status(tmp_path, 1) is None
    flaky.broken = False
    assert generate("instruct", tmp_path, num_samples=3, seed=0, models=models, progress=False).made == 1


# ---------------------------------------------------------------- CLI: errors, sharding, embedding
def test_cli_bad_input_gives_one_line_errors(tmp_path):
    cases = [
        (["generate", "painting", "--out", str(tmp_path / "a"), "-n", "2"], "unknown operator"),
        (["generate", "union", "--out", str(tmp_path / "b"), "-n", "2", "--models-from", str(tmp_path)], "sdxl-turbo"),
        (
            ["generate", "instruct", "--out", str(tmp_path / "c"), "-n", "1", "--option", "nonsense=1"],
            "unknown key 'nonsense'",
        ),
        (
            ["generate", "union", "--out", str(tmp_path / "d"), "-n", "1", "--option", "max_iou=lots"],
            "max_iou: input should be a valid number",
        ),
        (["generate", "instruct", "--out", str(tmp_path / "e"), "-n", "0"], "--num-samples"),
        (["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "cache")], "no such dataset folder"),
        (["embed", str(tmp_path), "--out", str(tmp_path / "cache")], "not a generated dataset"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code != 0, args
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr


LAUNCHED = """
import sys
from pops.cli import main

# Two commands in one launched process pair: generation, then embedding of what was generated.
for argv in (sys.argv[1:sys.argv.index("--then")], sys.argv[sys.argv.index("--then") + 1:]):
    sys.argv = ["pops", *argv]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
"""


@pytest.mark.slow
def test_two_processes_split_the_indices_and_embed_everything(tmp_path, models_dir):
    from pops.embeddings.cache import EmbeddingCache
    from pops.encoders.efficientnet import EfficientNetEncoder
    from pops.generate import generate

    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    out, cache_dir, n = tmp_path / "union", tmp_path / "cache", 5
    options = [x for k, v in RELAXED_UNION.items() for x in ("--option", f"{k}={v}")]
    # `--multi_gpu` starts the processes with torchrun; without a GPU they pair up over gloo on the CPU
    # (`accelerate launch --cpu` would start only one process).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        "generate",
        "union",
        "--out",
        str(out),
        "-n",
        str(n),
        "--seed",
        "11",
        "--models-from",
        str(models_dir),
        "--no-progress",
        *TINY_CLI,
        *options,
        "--then",
        "embed",
        str(out),
        "--out",
        str(cache_dir),
        "--encoder",
        "efficientnet",
        "--resolution",
        "64",
        "--fp32",
        "--no-progress",
    ]
    env = pops_env(OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = re.findall(
        r"rank (\d): (\d+) indices, made (\d+), rejected (\d+), skipped (\d+), failed (\d+)", result.stdout
    )
    assert [(int(r[0]), int(r[1])) for r in ranks] == [(0, 3), (1, 2)], result.stdout
    assert all(int(made) + int(rejected) == int(k) for _, k, made, rejected, _, _ in ranks)
    manifests = check_dataset(out, "union")
    done = sorted([m["index"] for m in manifests] + [r["index"] for r in storage.iter_rejections(out)])
    assert done == list(range(n)), "every index exactly once: no overlap, no gap"
    assert len(manifests) >= 3
    # Sharding changes nothing: one process makes the same samples.
    single = tmp_path / "single"
    from pops.generate.recipe import config_from_options
    from pops.generate.union import Config

    generate(
        "union",
        single,
        num_samples=n,
        seed=11,
        models=tiny_models(models_dir, "union"),
        config=config_from_options(Config, RELAXED_UNION),
        progress=False,
    )
    singles = list(storage.iter_samples(single))
    assert [m["index"] for m in singles] == [m["index"] for m in manifests]
    for a, b in zip(manifests, singles):
        assert a["meta"] == b["meta"] and a["images"] == b["images"]
    # The embedding pass covered every image of every sample, split over the two ranks.
    images = [Image.open(p).convert("RGB") for m in manifests for p in storage.image_paths(m).values()]
    assert f"{len(images)} images: {len(images)} encoded" in result.stdout
    cache = EmbeddingCache(cache_dir, EfficientNetEncoder(64, bf16=False))
    cache.encode(images, progress=False)
    assert cache.stats.hits == len(images) and cache.stats.encoded == 0


@pytest.mark.slow
def test_embed_cli_fills_the_cache_skips_undecodable_images_and_resumes(tmp_path):
    from pops.embeddings.cache import EmbeddingCache
    from pops.generate import generate

    data = tmp_path / "data"
    generate("instruct", data, num_samples=4, seed=0, models=GenerationModels(text_to_image=solid), progress=False)
    broken = storage.sample_dir(data, 1) / "image.jpg"
    broken.write_bytes(b"not a jpeg at all")
    # A tiny CLIP vision tower in the Kandinsky prior's layout (image_encoder/ + image_processor/).
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    clip_dir = tmp_path / "tiny-clip"
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=16,
        )
    ).save_pretrained(clip_dir / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        clip_dir / "image_processor"
    )

    cache_dir = tmp_path / "cache"
    for encoder, extra in (
        ("efficientnet", ["--resolution", "64", "--fp32"]),
        ("clip", ["--clip-model", str(clip_dir)]),
    ):
        result = run_cli("embed", str(data), "--out", str(cache_dir), "--encoder", encoder, "--no-progress", *extra)
        assert result.exit_code == 0, result.stderr[-3000:]
        assert "4 images: 3 encoded, 0 already cached, 1 undecodable (skipped)" in result.stdout
        assert "skipping undecodable image" in result.stderr and "image.jpg" in result.stderr
        again = run_cli("embed", str(data), "--out", str(cache_dir), "--encoder", encoder, "--no-progress", *extra)
        assert "4 images: 0 encoded, 3 already cached, 1 undecodable" in again.stdout
    namespaces = sorted(p.name for p in cache_dir.iterdir())
    assert len(namespaces) == 2 and any(n.startswith("clip-image") for n in namespaces)

    from pops.encoders.efficientnet import EfficientNetEncoder

    cache = EmbeddingCache(cache_dir, EfficientNetEncoder(64, bf16=False))
    assert len(cache) == 3
    good = [
        Image.open(p).convert("RGB")
        for m in storage.iter_samples(data)
        for p in storage.image_paths(m).values()
        if p != broken
    ]
    embeds = cache.encode(good, progress=False)
    assert embeds.shape == (3, 1280) and cache.stats.encoded == 0


@pytest.mark.slow
def test_generate_cli_resumes_from_local_model_folders(tmp_path, models_dir):
    out = tmp_path / "scene"
    args = [
        "generate",
        "scene",
        "--out",
        str(out),
        "-n",
        "2",
        "--models-from",
        str(models_dir),
        "--no-progress",
        *TINY_CLI,
    ]
    first = run_cli(*args)
    assert first.exit_code == 0, first.stderr[-3000:]
    assert "made 2, rejected 0, skipped 0 (already there), failed 0" in first.stdout
    info = storage.read_dataset_info(out)
    assert info["models"] == {"text_to_image": "sdxl-turbo", "segmenter": "rmbg", "inpainter": "sdxl-inpainting"}
    assert info["model_settings"]["image_size"] == SIZE
    check_dataset(out, "scene")
    second = run_cli(*args)
    assert "made 0, rejected 0, skipped 2" in second.stdout
