"""The paper's instruct protocol (Table 1) as one call, `pops.evaluation.protocol.run_protocol`, run end to end on tiny
random models of the real classes (tests/helpers/protocol_stack.py): the pOps operator rendered by the Kandinsky
decoder, InstructPix2Pix, SDXL + IP-Adapter at both scales, scored by CLIP, CLIP ViT-L/14, BLIP-2 and MiniLM."""

from __future__ import annotations

import json
import math
import time

import pytest

from tests.helpers.images import random_images
from tests.helpers.protocol_stack import TINY_SETTINGS, protocol_models, write_protocol_hub

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METRICS = ("image_similarity", "text_similarity", "caption_similarity")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return write_protocol_hub(tmp_path_factory.mktemp("protocol-hub"))


def tiny_run(hub, out, **options):
    """The protocol on the tiny models: 2 denoising steps everywhere, 32 px pictures, no progress bars."""
    from pops.evaluation.protocol import run_protocol

    options = {"objects": 2, "adjectives": 2, "seeds": 1, "steps": 2, "progress": False, **options}
    return run_protocol(out=out, models=protocol_models(hub), settings=TINY_SETTINGS, **options)


def picture_folder(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, random_images(len(names), seed=seed, size=48)):
        image.save(folder / name)
    return folder


# ----- the protocol end to end ----------------------------------------------------------------------------------------
def test_every_method_is_scored_on_three_metrics_beside_the_papers_numbers(hub, tmp_path):
    from pops.evaluation.protocol import PAPER_TABLE

    out = tmp_path / "run"
    result = tiny_run(hub, out, generate_inputs=True)
    saved = json.loads((out / "protocol.json").read_text())
    assert saved == {k: v for k, v in result.items() if k != "table"}
    assert saved["lists"] == "pops" and saved["full_protocol"] is False
    assert saved["objects"] == ["cat", "apple"] and saved["adjectives"] == ["ancient", "big"] and saved["seeds"] == [0]
    assert list(saved["methods"]) == ["pops", "instructpix2pix", "ip-adapter-0.5", "ip-adapter-0.1"]
    for method, entry in saved["methods"].items():
        assert entry["edits"] == 4 and entry["paper"] == PAPER_TABLE[method]
        for metric in METRICS:
            assert -1.0 <= entry[metric]["mean"] <= 1.0 and math.isfinite(entry[metric]["std"])
    assert saved["methods"]["ip-adapter-0.1"]["settings"]["scale"] == 0.1
    assert saved["methods"]["instructpix2pix"]["settings"]["prompt"] == "make it {adjective}"
    assert saved["metrics"]["text_similarity"]["template"] == "A {adjective} photo"
    # The input pictures SDXL-Turbo drew ("A photo of a {object}") stay in OUT/inputs/; one score line per edit.
    assert sorted(p.name for p in (out / "inputs").iterdir()) == ["apple.png", "cat.png"]
    lines = (out / "scores.jsonl").read_text().splitlines()
    scores = [json.loads(line) for line in lines[1:] if "method_settings" not in line]
    assert len(scores) == 16 and all(isinstance(s["caption"], str) for s in scores)
    table = result["table"]
    for text in ("pops", "instructpix2pix", "ip-adapter-0.5", "0.661", "0.826", "0.531", "lists: pops", "a subset"):
        assert text in table

    # A rerun with the same settings resumes: nothing is edited again, the summary is the same.
    again = tiny_run(hub, out, generate_inputs=True)
    assert (out / "scores.jsonl").read_text().splitlines() == lines
    assert again["methods"] == saved["methods"]
    # Other settings into the same folder are refused (the scores would mix), unless told to replace them.
    with pytest.raises(FileExistsError, match="holds a run with other settings .*--overwrite"):
        tiny_run(hub, out, generate_inputs=True, steps=3)


def test_an_edit_does_not_depend_on_its_batch(hub, tmp_path):
    inputs = picture_folder(tmp_path / "pictures", ["cat.png", "apple.png", "chair.png"])
    common = dict(inputs=inputs, objects_file=None, methods=["pops", "ip-adapter-0.1"], objects=3)
    one = tiny_run(hub, tmp_path / "one", batch_size=1, **common)
    three = tiny_run(hub, tmp_path / "three", batch_size=3, **common)
    rows = {}
    for name in ("one", "three"):
        lines = (tmp_path / name / "scores.jsonl").read_text().splitlines()[1:]
        rows[name] = [json.loads(line) for line in lines if "method_settings" not in line]
        rows[name].sort(key=lambda r: (r["method"], r["object"], r["adjective"]))
    for a, b in zip(rows["one"], rows["three"], strict=True):
        assert (a["method"], a["object"], a["input"]) == (b["method"], b["object"], b["input"])
        assert a["image_similarity"] == pytest.approx(b["image_similarity"], abs=2e-3)
        assert a["text_similarity"] == pytest.approx(b["text_similarity"], abs=2e-3)
    assert one["objects"] == three["objects"] == ["apple", "cat", "chair"]  # a folder's pictures name the objects


def test_a_baseline_that_cannot_load_is_skipped_in_one_line_when_asked(hub, tmp_path):
    inputs = picture_folder(tmp_path / "pictures", ["teddy_bear.png", "Apple.JPG"])
    models = protocol_models(hub) | {"sdxl": str(tmp_path / "no-sdxl")}
    from pops.evaluation.protocol import run_protocol

    options = dict(
        out=tmp_path / "run",
        inputs=inputs,
        methods=["pops", "ip-adapter-0.5"],
        objects=2,
        adjectives=1,
        seeds=1,
        steps=2,
        settings=TINY_SETTINGS,
        progress=False,
        image_model="L14",
    )
    with pytest.raises(FileNotFoundError, match="SDXL base: no such folder"):
        run_protocol(models=models, **options)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    result = run_protocol(models=models, skip_unavailable=True, **options)
    assert result["objects"] == ["Apple", "teddy bear"]
    skipped = result["methods"]["ip-adapter-0.5"]
    assert "no such folder" in skipped["skipped"] and "\n" not in skipped["skipped"]
    assert result["methods"]["pops"]["edits"] == 2
    assert result["metrics"]["image_similarity"]["model"] == "CLIP ViT-L/14"
    assert "skipped: SDXL base: no such folder" in result["table"]


# ----- refusals: one line, before any model loads, nothing written ------------------------------------------------
def _write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


BAD = [
    ("missing list", lambda d: {"objects_file": d / "none.txt"}, FileNotFoundError, "no such objects list"),
    ("empty list", lambda d: {"objects_file": _write(d / "e.txt", "")}, ValueError, "empty file"),
    ("comments only", lambda d: {"adjectives_file": _write(d / "c.txt", "# x\n\n")}, ValueError, "no adjectives"),
    ("too few", lambda d: {"objects_file": _write(d / "f.txt", "cat\ndog\n"), "objects": 3}, ValueError, "fewer"),
    ("not text", lambda d: {"objects_file": _write(d / "b.txt", b"\x89PNG\x00\xff\xfe")}, ValueError, "not"),
    ("repeated", lambda d: {"adjectives_file": _write(d / "r.txt", "big\nBig\n")}, ValueError, "listed twice"),
    ("more than shipped", lambda d: {"adjectives": 66}, ValueError, "fewer than the 66 asked for"),
    ("no GPU", lambda d: {"device": "cuda"}, ValueError, "no CUDA GPU"),
    ("unknown method", lambda d: {"methods": ["dalle"]}, ValueError, "unknown method 'dalle'"),
    ("no inputs", lambda d: {"generate_inputs": False}, ValueError, "--inputs DIR"),
    ("missing pictures", lambda d: {"generate_inputs": False, "inputs": d}, FileNotFoundError, "no pictures"),
    ("unknown setting", lambda d: {"settings": {"sizes": 3}}, ValueError, "unknown setting 'sizes'"),
    ("bad template", lambda d: {"settings": {"text_template": "A {word}"}}, ValueError, "text_template"),
    ("bad count", lambda d: {"seeds": 0}, ValueError, "--seeds"),
    ("missing folder", lambda d: {"models": {"clip_l14": str(d / "no")}}, FileNotFoundError, "ViT-L/14: no such"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_in_one_line_before_anything_loads(case, tmp_path):
    from pops.evaluation.protocol import run_protocol

    _, make, error, text = case
    options = {"out": tmp_path / "out", "generate_inputs": True, "progress": False, **make(tmp_path)}
    with pytest.raises(error) as caught:
        run_protocol(**options)
    message = str(caught.value)
    assert text in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_a_model_the_offline_hub_cannot_give_is_one_line_naming_it(tmp_path, monkeypatch):
    from pops.evaluation.protocol import run_protocol

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError) as caught:  # the default models, none of them in the local cache
        run_protocol(out=tmp_path / "out", generate_inputs=True, progress=False)
    message = str(caught.value)
    assert "'openai/clip-vit-large-patch14'" in message and "--local-dir" in message and "\n" not in message
    assert time.monotonic() - start < 5 and not (tmp_path / "out").exists()


def test_command_line_settings_and_models_are_read_with_their_types():
    from pops.evaluation.protocol import parse_models, parse_settings

    settings = parse_settings(
        ["sdxl_size=512", "prior_steps=none", "sdxl_guidance=3.5", "text_template=A {adjective} pic"]
    )
    assert settings == {
        "sdxl_size": 512,
        "prior_steps": None,
        "sdxl_guidance": 3.5,
        "text_template": "A {adjective} pic",
    }
    assert parse_models(["blip2=/models/blip2", "sdxl = my/sdxl"]) == {"blip2": "/models/blip2", "sdxl": "my/sdxl"}
    for parse, item, text in [
        (parse_settings, "sdxl_size", "KEY=VALUE"),
        (parse_settings, "sizes=3", "unknown setting 'sizes'"),
        (parse_settings, "sdxl_size=big", "a whole number"),
        (parse_models, "dalle=x/y", "unknown role 'dalle'"),
        (parse_models, "blip2=", "names no model"),
    ]:
        with pytest.raises(ValueError, match=text):
            parse([item])


# ----- the word lists ---------------------------------------------------------------------------------------------
def test_the_shipped_lists_have_the_papers_sizes_and_come_from_the_word_banks():
    from pops.evaluation.protocol.lists import load_list
    from pops.generate.words import load_words

    objects, adjectives = load_list("objects"), load_list("adjectives")
    assert len(objects.words) == 52 and len(adjectives.words) == 65 and objects.shipped and adjectives.shipped
    assert set(objects.words) <= set(load_words("objects"))
    assert set(adjectives.words) <= set(load_words("adjectives")) | set(load_words("art_types"))
    assert load_list("objects", count=3).words == ("cat", "apple", "chair")  # --objects N: the first N
