"""The operator registry: everything that makes one pOps operator different from another.

Adding an operator is adding one `OperatorSpec` to `REGISTRY`. Nothing operator-specific lives elsewhere:
the prior, the objective, the sampler, the CLI and the embedded world all read these entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SlotKind = Literal["image", "text"]


@dataclass(frozen=True)
class Slot:
    """One input of an operator. Slot order is the order of the condition rows (positions matter)."""

    name: str
    kind: SlotKind = "image"
    help: str = ""
    # Text slots only: how many zero rows stand for the word when it is dropped outright (BOS, word, EOS).
    null_rows: int = 3


@dataclass(frozen=True)
class DropoutRule:
    """Training-time condition dropout (a dropped slot is zeros in normalised space).

    `independent`: each slot is dropped on its own with this probability.
    `joint`: all slots are dropped together with this probability.
    Both may be set; a slot is dropped when either rule drops it.
    """

    independent: float = 0.0
    joint: float = 0.0

    def sample(self, batch_size: int, num_slots: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A (batch_size, num_slots) bool mask, True where the slot is dropped."""
        drop = torch.rand(batch_size, num_slots, generator=generator) < self.independent
        joint = torch.rand(batch_size, 1, generator=generator) < self.joint
        return drop | joint

    def expected_rate(self, num_slots: int) -> float:
        """Probability that any one slot is dropped (for tests and docs)."""
        return 1.0 - (1.0 - self.independent) * (1.0 - self.joint)


# The 12 clothing labels of ATR human parsing (background, face, arms and legs excluded): one fixed slot each.
COMPOSITION_SLOTS = (
    "hat",
    "hair",
    "sunglasses",
    "upper_clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left_shoe",
    "right_shoe",
    "bag",
    "scarf",
)


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    description: str
    slots: tuple[Slot, ...]
    dropout: DropoutRule
    guidance_scale: float
    # Union: the two objects play symmetric roles, so A and B are swapped at random in training.
    swap_inputs: bool = False
    # Instruct: weight of 10 * (1 - cos(prediction, text embedding of `alignment_prompt`)).
    text_alignment_weight: float = 0.0
    alignment_prompt: str = ""
    # Name of the data recipe that yields this operator's samples: a recipe of the embedded world (pops.world.recipes)
    # and, when `generator` is set, a module of `pops generate` (pops.generate.<generator>).
    recipe: str = ""
    generator: str = ""
    # The embedded world's random-stream id of this operator (a stable integer: it fixes every sample's jitter, so
    # an entry keeps its id forever and a new entry takes a new one).
    stream_id: int = 0
    # Other names an equation may call the operator by.
    aliases: tuple[str, ...] = ()
    # Test splits beyond "test" (held-out combinations) that the world draws and the evaluation scores.
    extra_test_splits: tuple[str, ...] = ()
    # The demo: training samples per training class (full and --quick), and the relative cost of training and
    # evaluating the operator (the costliest start first, so worker processes finish together).
    train_per_class: int = 1
    quick_train_per_class: int = 1
    # ... and how many training-only combinations its world adds (procedural objects, further outfits; see
    # pops.world.WorldConfig.training_only); --quick draws a quarter of them.
    training_only: int = 0
    # ... and its training beyond the demo's shared recipe: dropout inside the transformer blocks, and a factor on
    # the batch size (both regularise the small operators against memorising their training combinations).
    demo_dropout: float = 0.0
    demo_batch_factor: int = 1
    job_cost: float = 1.0

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    @property
    def image_slots(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.slots) if s.kind == "image")

    @property
    def text_slots(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.slots) if s.kind == "text")


REGISTRY: dict[str, OperatorSpec] = {
    spec.name: spec
    for spec in (
        OperatorSpec(
            name="texturing",
            description="paint an object with the texture of a patch",
            slots=(Slot("object", help="the object to re-texture"), Slot("texture", help="a patch of the texture")),
            dropout=DropoutRule(independent=0.25),
            guidance_scale=8.0,
            recipe="texturing",
            generator="texturing",
            stream_id=1,
            aliases=("texture",),
            # measured: held-out top-1 0.78 -> 0.87 from 1 to 3 samples per class; one sample per combination plus
            # 576 procedural objects (same encoding cost) scored 0.81: more objects, less jitter per class, hurt here
            train_per_class=3,
            # measured, world seeds 0-4 (validation top-1 / held-out gap closed, mean): 0.908 / 0.842 with the shared
            # recipe, 0.862 / 0.798 with dropout 0.1, 0.938 / 0.889 (worst seed 0.783 -> 0.867) with dropout 0.1 at
            # twice the batch
            demo_dropout=0.1,
            demo_batch_factor=2,
            job_cost=6.0,
        ),
        OperatorSpec(
            name="union",
            description="one embedding holding both objects",
            slots=(Slot("object_a", help="first object"), Slot("object_b", help="second object")),
            dropout=DropoutRule(joint=0.2),
            guidance_scale=8.0,
            swap_inputs=True,
            recipe="union",
            generator="union",
            stream_id=2,
            job_cost=1.0,
        ),
        OperatorSpec(
            name="scene",
            description="place an object in a scene",
            slots=(Slot("object", help="the object, on white"), Slot("scene", help="the empty scene")),
            dropout=DropoutRule(joint=0.1),
            guidance_scale=1.0,
            recipe="scene",
            generator="scene",
            stream_id=3,
            # the object input shares the target's jitter: more samples per class
            # (measured: 1 sample per combination + 320 procedural objects, same cost: 0.78 against 0.82)
            train_per_class=3,
            quick_train_per_class=2,
            # measured as texturing: 0.896 / 0.629 shared, 0.896 / 0.693 with dropout 0.1, 0.929 / 0.694 (worst seed
            # 0.455 -> 0.561) with dropout 0.1 at twice the batch (union and composition: lower validation top-1)
            demo_dropout=0.1,
            demo_batch_factor=2,
            job_cost=5.5,
        ),
        OperatorSpec(
            name="instruct",
            description="change an object by one word (an adjective or an art style)",
            slots=(Slot("object", help="the object image"), Slot("word", kind="text", help="one word")),
            dropout=DropoutRule(joint=0.2),
            guidance_scale=1.0,
            text_alignment_weight=10.0,
            # the reference's data: "A {adjective} {object} {placement}" (the placement may be empty)
            alignment_prompt="A {word} {object} {placement}",
            recipe="instruct",
            generator="instruct",
            stream_id=4,
            extra_test_splits=("test_synonyms",),
            # measured, seed 0: words from TRAINING_WORDS (every training sample) lift held-out synonyms 0.31 -> 0.48;
            # said by half the samples (the default), quick world validation top-1 0.19 -> 0.38; 240 procedural
            # objects instead of the second sample per combination gave 0.53 / 0.41 (within noise on combinations).
            # Seeds 0-4, the separate operator (validation top-1 / held-out gap closed mean / worst): 2 samples per
            # combination 0.492 / 0.477 / 0.448, 6 samples 0.519 / 0.544 / 0.435, 10 samples 0.519 / 0.601 / 0.523
            # (its validation set 3x and 5x larger, so less flattered by the best of the candidates, and no lower):
            # 6, the cheaper of the two that tie on validation (the full demo at 10, seeds 0-4: the separate
            # instruct 0.551 -> 0.594 held-out, but a changed joint model took union and scene on seed 4, 0.79 ->
            # 0.58 and 0.57 -> 0.47); 960 procedural objects added to 2 samples: 0.41 held-out (synonyms 0.45 ->
            # 0.24). Each further sample per combination costs ~480 encoded images (~1.3 s).
            train_per_class=6,
            quick_train_per_class=2,
            # measured as texturing: 0.446 / 0.431 shared, 0.421 / 0.472 with dropout 0.1, 0.492 / 0.477 (synonyms'
            # gap closed 0.433 -> 0.454) with dropout 0.1 at twice the batch
            demo_dropout=0.1,
            demo_batch_factor=2,
            # two test sets
            job_cost=8.0,
        ),
        OperatorSpec(
            name="composition",
            description="a person wearing up to 12 garments, one fixed slot per clothing category",
            slots=tuple(
                Slot(name, help=f"crop of the {name.replace('_', ' ')} on white") for name in COMPOSITION_SLOTS
            ),
            dropout=DropoutRule(joint=0.2),
            guidance_scale=1.0,
            recipe="composition",
            generator="composition",
            stream_id=5,
            aliases=("compose", "clothes"),
            # few classes, many inputs
            # one sample per candidate training outfit and 672 further outfits (the cost of 8 per outfit); measured,
            # seed 0: held-out top-1 0.60 -> 0.875 (oracle 0.81)
            train_per_class=1,
            training_only=672,
            quick_train_per_class=2,
            # 16 tokens
            job_cost=4.0,
        ),
    )
}


def get_spec(kind: str) -> OperatorSpec:
    """The registry entry for `kind`; a ValueError naming the known operators otherwise."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown operator {kind!r}; known operators: {', '.join(REGISTRY)}") from None
