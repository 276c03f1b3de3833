"""`pops apply` and embedding files: chaining through files, and every bad input as a one-line error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pops.embeddings.io import load_embeddings, save_embeddings
from pops.embeddings.pairs import Pairs
from tests.helpers.cli import run_cli
from tests.helpers.processes import pops_env


@pytest.fixture
def texturing_dir(tiny_operator, tmp_path):
    return tiny_operator("texturing").save_pretrained(tmp_path / "texturing")


def _emb(path, rows=1, dim=32, seed=0):
    return save_embeddings(
        path, torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), {"made": "test"}
    )


def test_apply_writes_embeddings_with_metadata_and_chains(texturing_dir, tmp_path):
    a, b = _emb(tmp_path / "a.safetensors"), _emb(tmp_path / "b.safetensors", seed=1)
    out = tmp_path / "out.safetensors"
    args = ["apply", str(a), str(b), "-m", str(texturing_dir), "--seed", "3", "--steps", "4", "-n", "2", "-o", str(out)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    embeds, meta = load_embeddings(out)
    assert embeds.shape == (2, 32) and not torch.equal(embeds[0], embeds[1])
    assert meta["operator"] == "texturing" and meta["seed"] == 3 and meta["inputs"] == [str(a), str(b)]
    # same seed → same file contents; the output chains back in as an input (2 rows → 2 outputs)
    again = tmp_path / "again.safetensors"
    assert run_cli(*args[:-1], str(again)).exit_code == 0
    assert torch.equal(load_embeddings(again)[0], embeds)
    chained = tmp_path / "chained.safetensors"
    result = run_cli("apply", str(out), "-", "-m", str(texturing_dir), "--steps", "3", "-o", str(chained))
    assert result.exit_code == 0, result.output
    assert load_embeddings(chained)[0].shape == (2, 32)


def test_pt_inputs_are_accepted(texturing_dir, tmp_path):
    torch.save(torch.randn(32), tmp_path / "a.pt")
    torch.save({"embeddings": torch.randn(1, 32)}, tmp_path / "b.pt")
    out = tmp_path / "o.safetensors"
    result = run_cli(
        "apply",
        str(tmp_path / "a.pt"),
        str(tmp_path / "b.pt"),
        "-m",
        str(texturing_dir),
        "--steps",
        "2",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output


def test_unicode_paths_with_spaces_and_half_or_double_precision_files_are_accepted(tmp_path):
    """What the bad-input suite must not refuse: a picture and an embedding file under a unicode name with spaces,
    embeddings stored as fp16, bf16 or fp64 (read as float32), from a file and through the Python API."""
    from PIL import Image
    from safetensors.torch import save_file

    from tests.helpers.priors import PICTURE_WIDTH, picture_operator

    folder = tmp_path / "données ünï 日本"
    op = picture_operator()
    op_dir = op.save_pretrained(folder / "opérateur un")
    picture = folder / "pïcture rouge ø.png"
    Image.new("RGB", (32, 32), "red").save(picture)
    rows = torch.randn(1, PICTURE_WIDTH, generator=torch.Generator().manual_seed(0))
    half, double = folder / "émbed demi.safetensors", folder / "émbed double.pt"
    save_file({"embeddings": rows.half()}, str(half))
    torch.save(rows.double(), double)
    embeds, _ = load_embeddings(half)
    assert embeds.dtype == torch.float32 and torch.allclose(embeds, rows, atol=1e-2)
    for i, inputs in enumerate([(picture, half), (half, double)]):
        out = folder / f"sortie {i} ø.safetensors"
        result = run_cli("apply", *map(str, inputs), "-m", str(op_dir), "--steps", "2", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert load_embeddings(out)[0].shape == (1, PICTURE_WIDTH)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        out = op.sample([rows.to(dtype), rows.to(dtype)], num_inference_steps=2)
        assert out.shape == (1, PICTURE_WIDTH) and torch.isfinite(out).all()


def test_integer_embeddings_or_token_rows_are_refused_by_the_python_api(tiny_operator):
    op = tiny_operator("instruct", text_width=16)
    emb, rows = torch.randn(1, 32), torch.randn(1, 3, 16)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        name = str(dtype).removeprefix("torch.")
        with pytest.raises(ValueError, match=rf"input 'object': expected floating-point numbers \(.*\), got {name}$"):
            op.sample([emb.to(dtype), rows], num_inference_steps=2)
        with pytest.raises(ValueError, match="input 'word': expected floating-point numbers"):
            op.sample([emb, rows.to(dtype)], num_inference_steps=2)
    assert op.sample([emb.half(), rows.bfloat16()], num_inference_steps=2).shape == (1, 32)


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_width", "width 16, expected 32"),
        ("nan", "NaN or inf"),
        ("slots", "takes 2 inputs"),
        ("missing", "no such embedding file"),
        ("unknown_model", "no such operator folder"),
        ("image_without_encoder", "no image encoder"),
        ("corrupt", "not a readable safetensors"),
        ("batch", "different batch sizes"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(texturing_dir, tmp_path, case, message):
    a = _emb(tmp_path / "a.safetensors")
    other = {
        "wrong_width": lambda: str(_emb(tmp_path / "w.safetensors", dim=16)),
        "nan": lambda: str(_nan(tmp_path / "n.pt")),
        "missing": lambda: str(tmp_path / "nope.safetensors"),
        "image_without_encoder": lambda: str(_png(tmp_path / "i.png")),
        "corrupt": lambda: str(_corrupt(tmp_path / "c.safetensors")),
        "batch": lambda: str(_emb(tmp_path / "b3.safetensors", rows=3)),
    }
    out = tmp_path / "out.safetensors"
    inputs = (
        [str(a)]
        if case == "slots"
        else [
            str(_emb(tmp_path / "a2.safetensors", rows=2)) if case == "batch" else str(a),
            other.get(case, lambda: str(a))(),
        ]
    )
    model = str(tmp_path / "no_such_model") if case == "unknown_model" else str(texturing_dir)
    result = run_cli("apply", *inputs, "-m", model, "--steps", "2", "-o", str(out))
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unknown_operator_kind_in_a_folder(tiny_operator, tmp_path):
    import json

    folder = tiny_operator("scene").save_pretrained(tmp_path / "op")
    config = json.loads((folder / "pops_config.json").read_text())
    config["kind"] = "paint"
    (folder / "pops_config.json").write_text(json.dumps(config))
    result = run_cli("apply", "-", "-", "-m", str(folder), "-o", str(tmp_path / "o.safetensors"))
    assert result.exit_code != 0 and "unknown operator 'paint'" in result.output


def test_console_script_help_and_exit_code(tmp_path):
    env = pops_env()
    help_text = subprocess.run(
        [sys.executable, "-c", "from pops.cli import main; main()", "apply", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert help_text.returncode == 0 and "--guidance-scale" in help_text.stdout
    bad = subprocess.run(
        [sys.executable, "-c", "from pops.cli import main; main()", "apply", "x", "-m", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:")


def test_pairs_round_trip(tmp_path):
    rows = torch.randn(5, 3, 12)
    pairs = Pairs(
        kind="instruct",
        slots=[torch.randn(5, 32), (rows, torch.ones(5, 3, dtype=torch.bool))],
        present=torch.ones(5, 2, dtype=torch.bool),
        target=torch.randn(5, 32),
        class_ids=torch.arange(5),
        info={"classes": ["a", "b"]},
    )
    loaded = Pairs.load(pairs.save(tmp_path / "p.safetensors"))
    assert loaded.kind == "instruct" and loaded.info == {"classes": ["a", "b"]} and len(loaded) == 5
    batch = loaded.batch(torch.tensor([0, 2]))
    assert torch.equal(batch.slots[1][0], rows[[0, 2]]) and torch.equal(batch.target, pairs.target[[0, 2]])


def _nan(path):
    t = torch.randn(1, 32)
    t[0, 3] = float("nan")
    torch.save(t, path)
    return path


def _png(path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(path)
    return path


def _corrupt(path):
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return path


def test_apply_averages_draws_and_records_them(texturing_dir, tmp_path):
    """--draws N: each output the mean of N samples (recorded in the output's metadata); a bad count is one line."""
    a, b = _emb(tmp_path / "a.safetensors"), _emb(tmp_path / "b.safetensors", seed=1)
    base = ["apply", str(a), str(b), "-m", str(texturing_dir), "--sampler", "ddim", "--steps", "2"]
    outs = {}
    for draws in ("1", "4"):
        out = tmp_path / f"draws{draws}.safetensors"
        result = run_cli(*base, "--draws", draws, "-o", str(out))
        assert result.exit_code == 0, result.output
        outs[draws], meta = load_embeddings(out)
        assert meta["draws"] == int(draws)
    assert not torch.allclose(outs["1"], outs["4"])
    bad = run_cli(*base, "--draws", "0", "-o", str(tmp_path / "bad.safetensors"))
    assert bad.exit_code != 0 and "--draws" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()


def test_apply_takes_a_sampler_by_name(texturing_dir, tmp_path):
    a, b = _emb(tmp_path / "a.safetensors"), _emb(tmp_path / "b.safetensors", seed=1)
    outs = {}
    for sampler, steps in (("unclip", "4"), ("ddim", "1"), ("dpmpp", "2")):
        out = tmp_path / f"{sampler}.safetensors"
        args = [
            "apply",
            str(a),
            str(b),
            "-m",
            str(texturing_dir),
            "--sampler",
            sampler,
            "--steps",
            steps,
            "-o",
            str(out),
        ]
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        outs[sampler], meta = load_embeddings(out)
        assert meta["sampler"] == sampler and meta["steps"] == int(steps)
    assert not torch.allclose(outs["ddim"], outs["dpmpp"])
    bad = run_cli(
        "apply", str(a), str(b), "-m", str(texturing_dir), "--sampler", "euler", "-o", str(tmp_path / "x.safetensors")
    )
    assert bad.exit_code != 0 and "unknown sampler 'euler'" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x.safetensors").exists()


def test_a_warning_during_a_command_prints_on_its_own_line_above_the_progress_bar(capsys):
    import logging

    from tqdm.auto import tqdm

    from pops.cli.app import run_or_fail

    def work():
        for i in tqdm(range(2), desc="equation", file=sys.stderr):
            if i == 1:
                logging.getLogger("pops.operators.inputs").warning("instruct: 'crimson' is not one of the 3 words")

    run_or_fail(work)
    # Whatever a carriage return leaves on a line is what the terminal shows: the warning alone, not after a bar.
    shown = [line.rsplit("\r", 1)[-1] for line in capsys.readouterr().err.splitlines()]
    assert "instruct: 'crimson' is not one of the 3 words" in shown


def unusual_pictures(folder) -> dict[str, object]:
    """Valid pictures in the modes and containers a careless or unusual user sends: CMYK, 16-bit grey, grey with
    alpha, palette, EXIF-rotated JPEG, animated GIF (its first frame is read)."""
    from PIL import Image

    red = Image.new("RGB", (32, 32), "red")
    pictures = {
        "cmyk.jpg": red.convert("CMYK"),
        "grey16.png": Image.new("I;16", (32, 32), 40000),
        "grey-alpha.png": red.convert("LA"),
        "palette.png": red.convert("P"),
    }
    for name, picture in pictures.items():
        picture.save(folder / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° when shown
    Image.new("RGB", (48, 32), "blue").save(folder / "rotated.jpg", exif=exif)
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("green", "yellow")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return sorted(p.name for p in folder.iterdir())


def test_unusual_but_valid_pictures_are_read(tmp_path):
    """What the bad-input suite must not refuse: each picture above goes through `pops apply` as an operator's input."""
    from tests.helpers.priors import PICTURE_WIDTH, picture_operator

    op_dir = picture_operator().save_pretrained(tmp_path / "op")
    folder = tmp_path / "pictures"
    folder.mkdir()
    names = unusual_pictures(folder)
    assert len(names) == 6
    for name in names:
        out = tmp_path / f"{name}.safetensors"
        result = run_cli(
            "apply", str(folder / name), str(folder / name), "-m", str(op_dir), "--steps", "2", "-o", str(out)
        )
        assert result.exit_code == 0, f"{name}: {result.output}"
        embeds = load_embeddings(out)[0]
        assert embeds.shape == (1, PICTURE_WIDTH) and torch.isfinite(embeds).all()
