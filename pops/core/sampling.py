"""How one call samples: `SamplingConfig` — the sampler, its steps, the guidance scale, the draws averaged into each
output, the condition layout.

A config is made and checked once where a value enters pops (the CLI's options, the UI's controls, `Operator.sample`'s
keywords), then carried as it is — through equations, evaluation, records, step-cache keys and model cards — and
resolved against an operator's own (`resolve`). Light on purpose (no torch): a command checks its options before
anything heavy loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass

from pops.base import checks
from pops.base.errors import BadValue
from pops.base.reference import DEFAULT_SAMPLER, DEFAULT_STEPS, LAYOUTS

# The samplers by name (their functions: pops.core.sampler.SAMPLERS).
SAMPLER_NAMES = ("unclip", "ddim", "ddim-linspace", "dpmpp")


def sampler_name(name) -> str:
    """`name` if it names a sampler; else one line naming the known ones."""
    if not isinstance(name, str):
        raise BadValue(f"sampler must be a name ({', '.join(SAMPLER_NAMES)}), got {name!r:.40}")
    if name not in SAMPLER_NAMES:
        raise BadValue(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return name


@dataclass(frozen=True)
class SamplingConfig:
    """How one call samples: the sampler (a name of SAMPLERS), its steps, the guidance scale (1 = none), the draws
    averaged into each output, the condition layout. None is the operator's own (`resolve`).

    Every value is checked when the config is made (pops.base.checks; a BadValue names the value as `names` says —
    the CLI's flags, the UI's labels — else by its field name), so a config is always valid and nothing downstream
    checks it again."""

    sampler: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    draws: int | None = None
    layout: str = "compact"
    names: InitVar[Mapping[str, str] | None] = None

    def __post_init__(self, names: Mapping[str, str] | None) -> None:
        name = {field: (names or {}).get(field, field) for field in ("num_inference_steps", "guidance_scale", "draws")}
        if self.sampler is not None:
            sampler_name(self.sampler)  # an unknown name is one line naming the known ones
        if self.layout not in LAYOUTS:
            raise BadValue(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        steps = checks.steps(self.num_inference_steps, name["num_inference_steps"])
        draws = None if self.draws is None else checks.count(self.draws, name["draws"])
        object.__setattr__(self, "num_inference_steps", steps)
        object.__setattr__(self, "guidance_scale", checks.guidance(self.guidance_scale, name["guidance_scale"]))
        object.__setattr__(self, "draws", draws)

    @classmethod
    def reference(cls, guidance_scale: float) -> SamplingConfig:
        """The reference's call (unclip, 25 steps, one draw) at `guidance_scale`."""
        return cls(DEFAULT_SAMPLER, DEFAULT_STEPS, guidance_scale, 1)

    def resolve(self, own: SamplingConfig) -> SamplingConfig:
        """Every value left None taken from `own` (an operator's own, complete config). The operator's own steps go
        with its own sampler only: another sampler named without steps takes the reference's DEFAULT_STEPS."""
        sampler = self.sampler or own.sampler
        steps = self.num_inference_steps
        if steps is None:
            steps = own.num_inference_steps if sampler == own.sampler else DEFAULT_STEPS
        guidance = own.guidance_scale if self.guidance_scale is None else self.guidance_scale
        return SamplingConfig(sampler, steps, guidance, own.draws if self.draws is None else self.draws, self.layout)

    @property
    def label(self) -> str:
        """The one name of a sampling setting in records, reports and scores: "SAMPLER STEPS", then " xDRAWS" beyond
        one draw and " gSCALE" when the scale is set, e.g. "ddim 4 x4 g5" (None parts: the operator's own)."""
        text = f"{self.sampler or 'own'} {self.num_inference_steps or 'own'}"
        if self.draws is not None and self.draws > 1:
            text += f" x{self.draws}"
        return text + (f" g{self.guidance_scale:g}" if self.guidance_scale is not None else "")


def call_sampling(sampling: SamplingConfig | None = None, **values) -> SamplingConfig:
    """The SamplingConfig of one call: `sampling`, or one made of its values given as keywords (`guidance_scale`,
    `num_inference_steps`, `sampler`, `draws`, `layout`) — the shorthand every API that samples takes; not both."""
    if sampling is None:
        return SamplingConfig(**values)
    if not isinstance(sampling, SamplingConfig):
        raise BadValue(f"sampling must be a SamplingConfig, got {type(sampling).__name__}")
    given = [k for k, v in values.items() if v is not None and not (k == "layout" and v == "compact")]
    if given:
        raise BadValue(f"give either sampling= or {', '.join(given)}, not both")
    return sampling
