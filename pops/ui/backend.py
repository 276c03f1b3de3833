"""What the browser UI does, without the browser: copy uploads into a run folder, run the equation, render, write files.

Every run gets its own folder under `OUT/runs/` holding its inputs, pictures, embeddings and record.json (the same
files as `pops apply`, so `pops apply --replay OUT/runs/…/record.json` reproduces a UI result). Equations typed in
the UI may only read files uploaded with them (or the models' `assets/` images): the server never reads, and so
never shows, anything else on its disk.

The models folders a page may open are fixed when the server starts (`pops serve --models DIR ...`). A request naming
any other folder — the page offers only those, but the HTTP API takes any string — is refused with one message that
says nothing about the path (whether it exists, is a folder, holds operators), before anything touches the disk.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pops.base import checks
from pops.base.errors import reason
from pops.base.reference import DEFAULT_STEPS
from pops.base.registry import REGISTRY
from pops.core.sampling import SamplingConfig
from pops.equation.ast import File, children
from pops.equation.diagnostics import EquationError
from pops.equation.parser import parse
from pops.equation.printer import quote
from pops.equation.record import check_renderable, render_steps, step_picture, write_result
from pops.equation.runner import EquationRunner
from pops.models.model_set import RENDERER_CHOICES, ModelSet

logger = logging.getLogger(__name__)
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
NOT_OFFERED = "this server does not offer that models folder; choose one of the list"
MAX_SAMPLES = 64  # per run: the page offers 1-8; one visitor's request must not take the server's memory


# How the page names the values of a SamplingConfig in its one-line errors.
SAMPLING_LABELS = {"guidance_scale": "guidance scale", "num_inference_steps": "sampling steps"}


@dataclass
class Settings:
    """A run's settings as the page (or an HTTP client) sent them; `checked()` is what a run uses: the same values in
    their canonical types, and `sampling`, the one SamplingConfig the run carries."""

    models_dir: str
    renderer: str = "auto"
    seed: int = 0
    guidance_scale: float | None = None  # None (or 0, the page's slider at its left end): each operator's own
    steps: int = DEFAULT_STEPS
    num_samples: int = 1
    sampler: str | None = None  # None: each operator's own (pops.core.sampling.SAMPLER_NAMES)
    sampling: SamplingConfig | None = field(default=None, repr=False)  # made by `checked()`

    def checked(self) -> Settings:
        """The settings with the ranges of the CLI and the Python API (pops.base.checks); BadValue names the first bad
        one. Whole floats count as integers (a slider sends 25.0)."""
        guidance = self.guidance_scale
        if guidance is not None and not isinstance(guidance, bool) and guidance == 0:
            guidance = None
        seed = checks.seed(_whole(self.seed), "seed")
        sampling = SamplingConfig(self.sampler, _whole(self.steps), guidance, names=SAMPLING_LABELS)
        samples = checks.integer(_whole(self.num_samples), "samples", 1, MAX_SAMPLES)
        guidance, steps = sampling.guidance_scale, sampling.num_inference_steps
        return Settings(self.models_dir, self.renderer, seed, guidance, steps, samples, self.sampler, sampling)

    def to_dict(self) -> dict:
        """The page's values (what a replay starts from)."""
        return {k: v for k, v in self.__dict__.items() if k != "sampling"}


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass
class RunOutput:
    """What one run shows: pictures with captions, files to download, the record and a status line."""

    result_images: list[tuple[str, str]] = field(default_factory=list)
    step_images: list[tuple[str, str]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    status: str = ""
    ok: bool = False
    replay: dict | None = None  # what "new seed for the last step" needs


def safe_filename(name: str) -> str:
    """A plain file name (no folders, no odd characters) that an equation can name bare."""
    base = SAFE_NAME.sub("_", Path(name).name).strip("._") or "file"
    return base if base[0].isalpha() else "f" + base


class Backend:
    """Holds one EquationRunner per offered models folder (loaded operators, cached steps) and numbers the runs.

    `models_dirs`: the folders a page may open, named in requests exactly as given here (the first is the default).
    """

    def __init__(
        self,
        models_dirs: list[str | Path] | str | Path | None,
        out_dir: str | Path,
        *,
        placement: dict | None = None,
        generator_device: str = "cpu",
    ):
        if models_dirs is None:
            models_dirs = []
        elif isinstance(models_dirs, (str, Path)):
            models_dirs = [models_dirs]
        self.models_dirs = list(dict.fromkeys(str(d) for d in models_dirs))
        self.default_models = self.models_dirs[0] if self.models_dirs else ""
        self.out_dir = Path(out_dir).resolve()
        self.runs_dir = self.out_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._runners: dict[str, EquationRunner] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.placement = dict(placement or {})  # device, dtype, cpu_offload of every folder's models
        self.generator_device = generator_device  # where every run draws its noise (pops.base.devices.make_generator)

    # ----- models ---------------------------------------------------------------------------------------------------
    def runner(self, models_dir: str | None) -> EquationRunner:
        """The runner of an offered folder; any other name is refused (compared as a string, the disk untouched)."""
        name = self.default_models if models_dir is None or models_dir == "" else models_dir
        if not self.models_dirs:
            raise ValueError("no models folder: start the server with `pops serve --models DIR`")
        if not isinstance(name, str) or name not in self.models_dirs:
            raise ValueError(NOT_OFFERED)
        with self._lock:
            if name not in self._runners:
                models = ModelSet.coerce(Path(name).expanduser(), **self.placement)
                self._runners[name] = EquationRunner(models, cache_dir=self.out_dir / "cache")
            return self._runners[name]

    def describe(self, models_dir: str | None) -> str:
        """One line of Markdown: which operators and renderers the models folder holds."""
        try:
            models = self.runner(models_dir).models
        except (ValueError, OSError) as exc:
            return f"**Models folder:** {exc}"
        ops = models.available()
        renderers = models.renderer_names()
        missing = [k for k in REGISTRY if k not in ops]
        text = f"**Operators:** {', '.join(ops) or 'none found'}"
        if missing:
            text += f" &nbsp;·&nbsp; not trained: {', '.join(missing)}"
        text += f" &nbsp;·&nbsp; **Renderers:** {', '.join(renderers) or 'none (results are embeddings only)'}"
        return text

    # ----- runs -----------------------------------------------------------------------------------------------------
    def new_run_dir(self, tag: str) -> Path:
        with self._lock:
            number = next(self._counter)
        run = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{number:04d}-{SAFE_NAME.sub('_', tag)[:24]}"
        (run / "inputs").mkdir(parents=True)
        return run

    def operator_equation(self, kind: str, slot_files: dict[str, str | None], word: str | None, run: Path) -> str:
        """Copy the uploads of an operator tab into the run folder and write the equation they make."""
        spec = REGISTRY[kind]
        args, given = [], 0
        for slot in spec.slots:
            if slot.kind == "text":
                word = (word or "").strip()
                args.append((slot.name, quote(word) if word else "_"))
                continue
            src = slot_files.get(slot.name)
            if not src:
                args.append((slot.name, "_"))
                continue
            name = slot.name + (Path(src).suffix.lower() or ".png")
            shutil.copyfile(src, run / "inputs" / name)
            args.append((slot.name, name))
            given += 1
        if not given:
            raise ValueError(f"upload at least one image for {kind}")
        if spec.num_slots > 2:  # composition: name the slots that are filled, the rest are dropped
            return f"{kind}({', '.join(f'{n}={v}' for n, v in args if v != '_')})"
        return f"{kind}({', '.join(v for _, v in args)})"

    def copy_uploads(self, files: list[str] | None, run: Path) -> list[str]:
        names = []
        for src in files or []:
            name = safe_filename(Path(src).name)
            if name in names:
                raise ValueError(f"two uploaded files are both called {name}; rename one")
            shutil.copyfile(src, run / "inputs" / name)
            names.append(name)
        return names

    def run_operator(
        self, kind: str, slot_files: dict[str, str | None], word: str | None, settings: Settings, progress: bool = False
    ) -> RunOutput:
        run = self.new_run_dir(kind)
        try:
            equation = self.operator_equation(kind, slot_files, word, run)
        except (ValueError, OSError) as exc:
            return self._failed(run, _error(reason(exc)))
        return self.apply(equation, run / "inputs", run, settings, progress=progress)

    def run_equation(
        self, equation: str, files: list[str] | None, settings: Settings, progress: bool = False
    ) -> RunOutput:
        run = self.new_run_dir("equation")
        try:
            self.copy_uploads(files, run)
        except (ValueError, OSError) as exc:
            return self._failed(run, _error(reason(exc)))
        return self.apply(equation, run / "inputs", run, settings, progress=progress)

    def resample_last(self, replay: dict | None, settings: Settings, progress: bool = False) -> RunOutput:
        """Re-run the previous equation with a new seed for its last step only; the other steps come from the cache."""
        if not replay:
            return RunOutput(status=_error("run an operator or an equation first"))
        seeds = dict(replay["seeds"])
        seeds["output"] = int(seeds.get("output", replay["seed"])) + 1
        settings = Settings(**{**replay["settings"], "renderer": settings.renderer})
        run = self.new_run_dir("resample")
        return self.apply(replay["equation"], Path(replay["inputs"]), run, settings, seeds=seeds, progress=progress)

    def apply(
        self,
        equation: str,
        inputs: Path,
        run: Path,
        settings: Settings,
        *,
        seeds: dict | None = None,
        progress: bool = False,
    ) -> RunOutput:
        """Run `equation` (its files under `inputs`) into the run folder `run`, render it and write its files; a
        refused or failed run is one status line and leaves no folder behind."""
        if not isinstance(equation, str) or not equation.strip():
            return self._failed(run, _error("type an equation, e.g. `texture(object.png, texture.png)`"))
        if settings.renderer not in RENDERER_CHOICES:
            return self._failed(run, _error(f"unknown renderer {settings.renderer!r:.40}"))
        try:
            settings = settings.checked()
            runner, plan, renderer, result = self._evaluate(equation, inputs, settings, seeds, progress)
        except EquationError as exc:
            return self._failed(run, _error(exc.pretty(equation), code=True))
        except (ValueError, OSError) as exc:
            return self._failed(run, _error(reason(exc)))
        except Exception as exc:  # a bug or a broken model: show it on the page (and the log), keep the server up
            logger.exception("running %r failed", equation)
            return self._failed(run, _error(f"internal error: {type(exc).__name__}: {exc}"))
        pictures = {}
        if renderer is not None:
            pictures = render_steps(renderer, result, int(settings.seed), self.generator_device)
        name = runner.models.renderer_name(settings.renderer) if renderer is not None else None
        result.record["ui_run"] = run.name  # runs are numbered in the order the queue served them
        record = write_result(result, run, pictures, name)

        out = RunOutput(record=record, ok=True)
        out.result_images = [(str(run / rel), f"sample {i}") for i, rel in enumerate(record["outputs"]["images"])]
        out.step_images = self._step_images(plan, result, run, pictures)
        out.downloads = [str(run / "output.safetensors")]
        out.downloads += [str(run / rel) for rel in record["outputs"]["steps"].values()]
        out.downloads.append(str(run / "record.json"))
        out.status = _done_status(run, result, record, settings, seeds, pictures)
        out.replay = {
            "equation": equation,
            "inputs": str(inputs),
            "seed": int(settings.seed),
            "seeds": record["seeds"],
            "settings": settings.to_dict(),
        }
        return out

    def _evaluate(self, equation: str, inputs: Path, settings: Settings, seeds: dict | None, progress: bool):
        """Every check before anything loads (paths, files, pictures, renderer), then the run: (runner, plan,
        renderer or None, EquationResult)."""
        _check_relative_paths(equation)
        runner = self.runner(settings.models_dir)
        plan = runner.validate(equation, base_dir=inputs)
        self._check_files(plan, inputs, runner.models.asset_dirs())
        runner.check_pictures(plan)  # before a model loads
        check_renderable(runner.models.renderer_name(settings.renderer), plan)  # before the renderer loads
        renderer = runner.models.renderer(settings.renderer)
        result = runner.run(
            plan,
            sampling=settings.sampling,
            seed=settings.seed,
            seeds=seeds,
            num_samples=settings.num_samples,
            base_dir=inputs,
            progress=progress,
            generator_device=self.generator_device,
        )
        return runner, plan, renderer, result

    def _step_images(self, plan, result, run: Path, pictures: dict) -> list[tuple[str, str]]:
        """The pictures of every step with captions: inputs first, then each computed step in evaluation order."""
        images = []
        for step in plan.steps:
            if step.op == "image":
                shown = step.path
                if not shown.is_relative_to(self.out_dir):  # an asset: copy it, the server shows only its own folder
                    shown = run / "assets" / step.path.name
                    shown.parent.mkdir(exist_ok=True)
                    shutil.copyfile(step.path, shown)
                images.append((str(shown), step.text))
        for step, res in zip(plan.steps, result.steps):
            if step.op in ("call", "sum") and pictures:
                label = "" if step.label.startswith("step ") else f"{step.label} = "
                images.append(
                    (str(run / step_picture(step.label)), f"{label}{step.text}" + (" · cached" if res.cached else ""))
                )
        return images

    def _failed(self, run: Path, status: str) -> RunOutput:
        """A refused run leaves nothing behind: its folder (with the copied uploads) is removed."""
        if run.is_relative_to(self.runs_dir):
            shutil.rmtree(run, ignore_errors=True)
        return RunOutput(status=status)

    @staticmethod
    def _check_files(plan, inputs: Path, asset_dirs: list[Path]) -> None:
        allowed = [inputs.resolve(), *(d.resolve() for d in asset_dirs)]
        for step in plan.steps:
            if step.path is not None and not any(step.path.is_relative_to(root) for root in allowed):
                raise EquationError(
                    f"the UI reads only uploaded files (and the models' assets); upload {step.path.name} and name it "
                    "by its file name",
                    step.pos.line,
                    step.pos.column,
                    step.text,
                )


def _check_relative_paths(equation: str) -> None:
    """Refuse absolute paths, `~` and `..` before anything touches the disk (not even an existence check)."""
    program = parse(equation)
    stack = [let.value for let in program.lets] + [program.result]
    while stack:
        node = stack.pop()
        stack.extend(children(node))
        if isinstance(node, File):
            path = Path(node.path)
            if path.is_absolute() or node.path.startswith("~") or ".." in path.parts:
                raise EquationError(
                    "the UI reads only uploaded files: name them by file name, without folders",
                    node.pos.line,
                    node.pos.column,
                    node.path,
                )


def _done_status(run: Path, result, record: dict, settings: Settings, seeds: dict | None, pictures: dict) -> str:
    """The status line of a finished run (Markdown)."""
    n_calls = sum(1 for s in result.computed if s.op == "call")
    return (
        f"**Done** (run {run.name.split('-')[2]}): {n_calls} operator step{'s' * (n_calls != 1)} in "
        f"{result.seconds:.2f} s "
        f"({result.num_cached} reused from the cache) · seed {settings.seed}"
        + (f", last step {seeds['output']}" if seeds and "output" in seeds else "")
        + ("" if pictures else " · no renderer: download the embeddings")
        + f"\n\n`{record['canonical']}`"
    )


def _error(message: str, code: bool = False) -> str:
    return f"**Error**\n\n```\n{message}\n```" if code else f"**Error:** {message}"
