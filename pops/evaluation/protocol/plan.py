"""What a run of the protocol is, settled before any model loads: its config (`ProtocolConfig`), the checked settings
and templates, the word lists, the output folder, where every model comes from, the `Plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pops.base.errors import reason
from pops.base.files import digest
from pops.base.reference import OPERATOR_CONFIG_NAME
from pops.evaluation.protocol import paper
from pops.evaluation.protocol.inputs import folder_pictures, generated_path
from pops.evaluation.protocol.lists import WordList, load_list
from pops.evaluation.protocol.results import LOG_NAME, SUMMARY_NAME, ScoreLog

TEMPLATE_FIELDS = {
    "input_prompt": ("object",),
    "text_template": ("adjective",),
    "caption_template": ("adjective", "caption"),
    "instructpix2pix_prompt": ("adjective",),
    "ip_adapter_prompt": ("adjective",),
}
TEMPLATES = {
    "input_prompt": paper.INPUT_PROMPT,
    "text_template": paper.TEXT_TEMPLATE,
    "caption_template": paper.CAPTION_TEMPLATE,
    "instructpix2pix_prompt": paper.INSTRUCTPIX2PIX_PROMPT,
    "ip_adapter_prompt": paper.IP_ADAPTER_PROMPT,
}
SETTINGS = {**paper.DEFAULTS, **TEMPLATES}
STEP_SETTINGS = ("prior_steps", "decoder_steps", "instructpix2pix_steps", "sdxl_steps")
POSITIVE_INTS = (*STEP_SETTINGS, "turbo_steps", "input_size", "decoder_size", "sdxl_size", "caption_tokens")


@dataclass
class ProtocolConfig:
    """Everything a run depends on. `models` maps roles (paper.MODELS: base, checkpoint, decoder, clip_l14, blip2,
    sentence, instructpix2pix, sdxl, ip_adapter, sdxl_turbo) to a hub id or a local folder; `operator` is an instruct
    operator folder used instead of base + checkpoint; `settings` changes the reference settings of paper.DEFAULTS and
    the prompt templates; `steps` sets every denoising loop at once (a quick look, not the protocol)."""

    out: str | Path
    methods: Sequence[str] = paper.METHODS
    objects: int | None = None
    adjectives: int | None = None
    seeds: int = paper.NUM_SEEDS
    first_seed: int = 0
    objects_file: str | Path | None = None
    adjectives_file: str | Path | None = None
    inputs: str | Path | None = None
    generate_inputs: bool = False
    input_seed: int = 0
    image_model: str = "bigG"
    models: dict[str, str] = field(default_factory=dict)
    operator: str | Path | None = None
    steps: int | None = None
    settings: dict = field(default_factory=dict)
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    generator_device: str = "cpu"
    skip_unavailable: bool = False
    overwrite: bool = False
    save_images: bool = False
    progress: bool = True


# ----- 1. checks before anything loads --------------------------------------------------------------------------------
def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return value


def check_settings(config: ProtocolConfig) -> dict:
    """The run's settings: paper.DEFAULTS and the templates, changed by `config.settings` and `config.steps`."""
    unknown = sorted(set(config.settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; known: {', '.join(SETTINGS)}")
    settings = {**SETTINGS, **config.settings}
    if config.steps is not None:
        _whole(config.steps, "--steps", 1)
        settings.update({k: config.steps for k in STEP_SETTINGS})
    for key in POSITIVE_INTS:
        if settings[key] is not None:
            _whole(settings[key], key, 1)
    for key in ("decoder_guidance", "instructpix2pix_guidance", "instructpix2pix_image_guidance", "sdxl_guidance"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{key} must be a number of at least 0, got {value!r}")
    for key, fields in TEMPLATE_FIELDS.items():
        template = settings[key]
        if not isinstance(template, str):
            raise ValueError(f"{key} must be a text, got {template!r}")
        names = ", ".join("{" + f + "}" for f in fields)
        try:
            template.format(**{f: "x" for f in fields})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{key} {template!r}: its fields are {names} ({reason(exc)})") from None
        if "{" + fields[0] + "}" not in template:
            raise ValueError(f"{key} {template!r} must contain {{{fields[0]}}}")
    return settings


def check_config(config: ProtocolConfig) -> None:
    methods = list(config.methods)
    if not methods:
        raise ValueError(f"no methods to run; choose from {', '.join(paper.METHODS)}")
    for method in methods:
        if method not in paper.METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(paper.METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError("a method is named twice")
    _whole(config.seeds, "--seeds", 1)
    _whole(config.first_seed, "--first-seed", 0)
    _whole(config.input_seed, "--input-seed", 0)
    _whole(config.batch_size, "--batch-size", 1)
    if config.image_model not in paper.IMAGE_MODELS:
        raise ValueError(f"--image-model must be one of {', '.join(paper.IMAGE_MODELS)}, got {config.image_model!r}")
    unknown = sorted(set(config.models) - set(paper.MODELS))
    if unknown:
        raise ValueError(f"unknown model role {unknown[0]!r}; known: {', '.join(paper.MODELS)}")
    if (config.inputs is None) == (not config.generate_inputs):
        raise ValueError(
            "give the input pictures: --inputs DIR (one picture per object) or --generate-inputs (SDXL-Turbo draws "
            "'A photo of a {object}'), one of the two"
        )


def check_out(out: Path, header: dict, overwrite: bool) -> None:
    """OUT is new or empty, holds a run of the same settings (resumed), or is to be replaced (`overwrite`)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    theirs = ScoreLog.read_header(out / LOG_NAME)
    if theirs is None:
        raise FileExistsError(f"--out {out} already holds other files; pass --overwrite to replace it")
    if theirs.get("settings_digest") != header["settings_digest"]:
        changed = [k for k in header if k != "settings_digest" and theirs.get(k) != header[k]]
        changed += [k for k in header["settings"] if (theirs.get("settings") or {}).get(k) != header["settings"][k]]
        what = f" ({', '.join(changed[:5])} differ)" if changed else ""
        raise FileExistsError(
            f"--out {out} holds a run with other settings{what}; pass --overwrite to replace it, or choose another "
            "folder"
        )


def clear_out(out: Path) -> None:
    """Remove what an earlier run wrote into OUT (`overwrite`); other files stay."""
    import shutil

    for name in (LOG_NAME, SUMMARY_NAME, "inputs", "images"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def needed_roles(config: ProtocolConfig, methods: Sequence[str], generate: bool) -> dict[str, tuple[str, ...]]:
    """{part: model roles}: what the metrics, the inputs and each method need."""
    parts = {"metrics": paper.METRIC_MODELS + (("base",) if config.image_model == "bigG" else ())}
    if generate:
        parts["inputs"] = ("sdxl_turbo",)
    for method in methods:
        roles = paper.METHOD_MODELS[method]
        if method == "pops" and config.operator is not None:
            roles = ("base", "decoder")  # the operator's folder replaces the released checkpoint
        parts[method] = roles
    return parts


def resolve_role(role: str, ref: str | None) -> str:
    """Where the model of `role` is: a local path, or a hub id that can be had (one line otherwise)."""
    from pops.base.hub import resolve_file, resolve_file_ref, resolve_model

    what = {
        "base": "Kandinsky 2.2 prior (the operators' CLIP ViT-bigG/14)",
        "checkpoint": "released instruct operator",
        "decoder": "Kandinsky 2.2 decoder",
        "clip_l14": "CLIP ViT-L/14",
        "blip2": "BLIP-2",
        "sentence": "sentence model",
        "instructpix2pix": "InstructPix2Pix",
        "sdxl": "SDXL base",
        "ip_adapter": "IP-Adapter weights",
        "sdxl_turbo": "SDXL-Turbo",
    }[role]
    if role == "sentence" and ref is None:
        from pops.encoders.minilm import bundled_model_dir

        return str(bundled_model_dir())
    if role == "checkpoint":
        return str(resolve_file_ref(ref, what=what))
    if role == "ip_adapter":
        return resolve_file(ref, paper.IP_ADAPTER_FILE, what=what)
    return resolve_model(ref, what=what)


def resolve_sources(config: ProtocolConfig, parts: dict[str, tuple[str, ...]]) -> tuple[dict, dict]:
    """({role: resolved source}, {method: why it is skipped}). A model a method needs that cannot be had skips the
    method with `skip_unavailable` (a one-line note), and is a one-line error otherwise; the metrics' and the inputs'
    models are always required."""
    refs = {**paper.MODELS, **config.models}
    resolved: dict[str, str] = {}
    failed: dict[str, Exception] = {}
    skipped: dict[str, str] = {}
    for part, roles in parts.items():
        for role in roles:
            if role not in resolved and role not in failed:
                try:
                    resolved[role] = resolve_role(role, refs[role])
                except (ValueError, OSError) as exc:
                    failed[role] = exc
            if role in failed:
                if part in paper.METHODS and config.skip_unavailable:
                    skipped[part] = reason(failed[role])
                    break
                raise failed[role]
    return resolved, skipped


# ----- the command line's KEY=VALUE options ---------------------------------------------------------------------------
GUIDANCE_SETTINGS = ("decoder_guidance", "instructpix2pix_guidance", "instructpix2pix_image_guidance", "sdxl_guidance")


def _pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value))
    return pairs


def parse_settings(items: Sequence[str]) -> dict:
    """`--set KEY=VALUE` options as settings: whole numbers for steps and sizes (`prior_steps=none`: the operator's
    own), numbers for guidance scales, text for the templates. Checked again, with the rest, by run_protocol."""
    settings: dict = {}
    for key, value in _pairs(items, "--set"):
        if key not in SETTINGS:
            raise ValueError(f"--set: unknown setting {key!r}; known: {', '.join(SETTINGS)}")
        if key == "prior_steps" and value.strip().lower() in ("none", "null", ""):
            settings[key] = None
        elif key in POSITIVE_INTS:
            try:
                settings[key] = int(value)
            except ValueError:
                raise ValueError(f"--set {key}: a whole number, got {value!r}") from None
        elif key in GUIDANCE_SETTINGS:
            try:
                settings[key] = float(value)
            except ValueError:
                raise ValueError(f"--set {key}: a number, got {value!r}") from None
        else:
            settings[key] = value
    return settings


def parse_models(items: Sequence[str]) -> dict[str, str]:
    """`--model ROLE=SOURCE` options (a hub id or a local folder per role of paper.MODELS)."""
    models = {}
    for role, source in _pairs(items, "--model"):
        if role not in paper.MODELS:
            raise ValueError(f"--model: unknown role {role!r}; known: {', '.join(paper.MODELS)}")
        if not source.strip():
            raise ValueError(f"--model {role}= names no model")
        models[role] = source.strip()
    return models


# ----- the run -------------------------------------------------------------------------------------------------------
def fingerprint(config: ProtocolConfig, settings: dict, dtype) -> dict:
    """What the scores depend on (not the methods, lists or seeds: each score row names its own edit)."""
    from pops.base.devices import dtype_name

    refs = {**paper.MODELS, **config.models}
    return {
        "settings": settings,
        "models": {role: str(refs[role]) for role in sorted(refs)},
        "operator": None if config.operator is None else str(config.operator),
        "image_model": config.image_model,
        "inputs": "generated" if config.inputs is None else str(config.inputs),
        "input_seed": config.input_seed,
        "dtype": dtype_name(dtype),
        "generator_device": str(config.generator_device),
    }


@dataclass
class Plan:
    """A checked run: what `prepare` settled before any model loads."""

    config: ProtocolConfig
    settings: dict
    objects: WordList
    adjectives: WordList
    seeds: list[int]
    device: object
    dtype: object
    header: dict
    sources: dict
    skipped: dict

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def choose_objects(config: ProtocolConfig) -> WordList:
    """The objects: the list (shipped or --objects-file), or — a folder of pictures without a list — its pictures."""
    if config.inputs is None or config.objects_file is not None:
        objects = load_list("objects", config.objects_file, config.objects)
        if config.inputs is not None:
            folder_pictures(config.inputs, objects.words)  # every object has its picture
        return objects
    found = list(folder_pictures(config.inputs))
    if config.objects is not None and config.objects > len(found):
        raise ValueError(f"--inputs {config.inputs}: {len(found)} pictures, fewer than --objects {config.objects}")
    return WordList("objects", tuple(found[: config.objects or len(found)]), str(config.inputs))


def prepare(config: ProtocolConfig) -> Plan:
    """Every check that needs no model: options, lists, pictures, device, the output folder, and where each model
    comes from. A refusal is one line (ValueError, FileNotFoundError, FileExistsError) and nothing is written."""
    from pops.base.devices import check_placement, resolve_device, resolve_dtype

    check_config(config)
    settings = check_settings(config)
    objects = choose_objects(config)
    adjectives = load_list("adjectives", config.adjectives_file, config.adjectives)
    check_placement(config.device, config.dtype, config.generator_device)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.operator is not None and not (Path(config.operator) / OPERATOR_CONFIG_NAME).is_file():
        raise FileNotFoundError(f"--operator {config.operator}: not an operator folder (no {OPERATOR_CONFIG_NAME})")
    out = Path(config.out)
    header = {"protocol": paper.NAME, **fingerprint(config, settings, dtype)}
    header["settings_digest"] = digest(header)
    check_out(out, header, config.overwrite)
    generate = config.inputs is None and (
        config.overwrite or any(not generated_path(out / "inputs", o).is_file() for o in objects.words)
    )
    sources, skipped = resolve_sources(config, needed_roles(config, config.methods, generate))
    seeds = [config.first_seed + k for k in range(config.seeds)]
    return Plan(config, settings, objects, adjectives, seeds, device, dtype, header, sources, skipped)
