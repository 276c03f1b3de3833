"""`pops distill`: a one-pass student of a tiny operator, and the command's bad inputs as one-line errors."""

from __future__ import annotations

import pytest
import torch

from pops.core.sampler import CLIP_RANGE
from pops.embeddings.pairs import Pairs
from pops.operators.operator import Operator
from pops.train.distill import DistillConfig, condition_of, distill, student_output, teacher_targets
from tests.helpers.cli import run_cli
from tests.helpers.pairs import make_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DIM = 32
CONFIG = DistillConfig(steps=150, noises=1, batch_size=32, lr=1e-3)


def _pairs(kind: str = "texturing", n: int = 48) -> Pairs:
    pairs = make_pairs(kind, n, DIM, learnable=False)
    pairs.present[: n // 4, 1] = False  # some dropped slots: the null condition the student must keep
    return pairs


def _ddim(op: Operator, pairs: Pairs, steps: int, scale: float | None = None) -> torch.Tensor:
    return op.sample_batch(
        pairs,
        guidance_scale=scale,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        sampler="ddim",
    )


@pytest.mark.parametrize("steps", [1, 2])
def test_targets_start_from_the_noise_the_sampler_draws(tiny_operator, steps):
    """The student's training call is its sampling call: ddim at guidance 1 from the noise the targets started from."""
    teacher, pairs = tiny_operator(), _pairs()
    targets = teacher_targets(teacher, pairs, DistillConfig(noises=1, teacher_steps=steps))
    with torch.no_grad():
        cond = condition_of(teacher, pairs, targets.index)
        own = teacher.model.denormalize(student_output(teacher, cond, targets.noise, steps))
    torch.testing.assert_close(own, _ddim(teacher, pairs, steps=steps, scale=1.0), rtol=1e-4, atol=1e-4)
    if steps == 1:  # one pass: the prediction at t = 999, clamped
        t = torch.full((len(pairs),), 999)
        with torch.no_grad():
            single = teacher.model(targets.noise, t, cond).clamp(-CLIP_RANGE, CLIP_RANGE)
        torch.testing.assert_close(teacher.model.denormalize(single), own, rtol=1e-5, atol=1e-5)


def test_a_teacher_that_averages_draws_still_gives_single_samples_and_a_single_pass_student(tiny_operator):
    """A teacher whose outputs are means of several draws (op.draws) still regresses the student onto ONE sample per
    noise (the student maps z to it), and the student samples one call per output."""
    teacher, pairs = tiny_operator(), _pairs(n=8)
    single = teacher_targets(teacher, pairs, DistillConfig(noises=2, teacher_steps=2))
    teacher.draws = 3
    averaging = teacher_targets(teacher, pairs, DistillConfig(noises=2, teacher_steps=2))
    assert torch.equal(single.target, averaging.target) and torch.equal(single.noise, averaging.noise)
    assert distill(teacher, pairs, DistillConfig(steps=2, noises=1, teacher_steps=2)).draws == 1


def test_student_one_pass_is_closer_to_the_guided_teacher_than_its_one_step(tiny_operator, tmp_path):
    teacher, pairs = tiny_operator(), _pairs()
    assert teacher.guidance_scale > 1
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    student = distill(teacher, pairs, CONFIG, teacher_name="tiny-teacher")
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, before[key]), f"the teacher changed: {key}"
    loaded = Operator.from_pretrained(student.save_pretrained(tmp_path / "student"))
    assert (loaded.sampler, loaded.guidance_scale, loaded.num_inference_steps) == ("ddim", 1.0, 1)
    assert (loaded.sampler, loaded.num_inference_steps) == ("ddim", 1)
    assert loaded.call_config(sampler="unclip").num_inference_steps == 25  # its own steps go with its own sampler
    assert loaded.training["summary"]["teacher"] == "tiny-teacher"
    assert "tiny-teacher" in (tmp_path / "student" / "README.md").read_text()
    goal = _ddim(teacher, pairs, steps=25)  # the teacher's guided 25-step samples from the training noises
    one_pass_out = loaded.sample_batch(pairs, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    # Called with no settings, the student takes its own: one pass.
    assert torch.equal(loaded.sample_batch(pairs, generator=torch.Generator().manual_seed(0)), one_pass_out)
    student_error = (one_pass_out - goal).pow(2).mean()
    teacher_error = (_ddim(teacher, pairs, steps=1) - goal).pow(2).mean()
    assert student_error < 0.5 * teacher_error, (student_error, teacher_error)


def test_cli_writes_a_student_folder(tiny_operator, tmp_path):
    teacher = tiny_operator().save_pretrained(tmp_path / "teacher")
    data = _pairs().save(tmp_path / "train.safetensors")
    out = tmp_path / "student"
    result = run_cli("distill", str(teacher), "--data", str(data), "-o", str(out), "--steps", "3")
    assert result.exit_code == 0, result.output
    op = Operator.from_pretrained(out)
    assert (op.sampler, op.guidance_scale, op.training["summary"]["steps"]) == ("ddim", 1.0, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student", "teacher", "train.safetensors"]
    # A two-pass student: trained through, and saved with, its 2-step call; its card says so.
    two = tmp_path / "two"
    args = ["distill", str(teacher), "--data", str(data), "-o", str(two), "--steps", "2", "--student-steps", "2"]
    result = run_cli(*args)
    assert result.exit_code == 0 and "samples in 2 passes" in result.output, result.output
    assert Operator.from_pretrained(two).sampling.label == "ddim 2 g1"
    card = (two / "README.md").read_text()
    assert "in 2 pass(es)" in card and "| default sampling | ddim, 2 steps, guidance 1" in card
    assert f"from the teacher `{teacher}`" in card


@pytest.mark.parametrize(
    "case",
    [
        "missing teacher",
        "other operator's pairs",
        "non-empty out",
        "missing pairs",
        "zero student steps",
        "recombine without input classes",
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(tiny_operator, tmp_path, case):
    teacher = tiny_operator().save_pretrained(tmp_path / "teacher")
    data = _pairs("union" if case == "other operator's pairs" else "texturing").save(tmp_path / "train.safetensors")
    out = tmp_path / "student"
    if case == "missing teacher":
        teacher = tmp_path / "nowhere"
    if case == "missing pairs":
        data = tmp_path / "none.safetensors"
    if case == "non-empty out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    extra = {"zero student steps": ["--student-steps", "0"], "recombine without input classes": ["--recombine", "2"]}
    listing = sorted(p.name for p in tmp_path.iterdir())
    args = ["distill", str(teacher), "--data", str(data), "-o", str(out), "--steps", "2", *extra.get(case, [])]
    result = run_cli(*args)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    if case == "non-empty out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
