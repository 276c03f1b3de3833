"""The operator registry: everything that makes one pOps operator different from another.

Adding an operator is adding one `OperatorSpec` to `REGISTRY`. Nothing operator-specific lives elsewhere:
the prior, the objective, the sampler, the CLI and the embedded world all read these entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
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
        import torch  # here, not at the top: `pops --help` reads the registry, and torch takes a second to import

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
    """One operator, as the paper defines it (DESIGN §1-2), plus where its data comes from.

    Everything a run of the operator needs to know about it — how many inputs and of what kind, how they are dropped
    in training, the default guidance, the symmetric swap, the text-alignment term — and the names of its data
    recipes. How the embedded demo trains it (samples per class, dropout, batch) is the demo's choice and lives there
    (pops.demo.training_recipes.DEMO_RECIPES).
    """

    kind: str
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
    spec.kind: spec
    for spec in (
        OperatorSpec(
            kind="texturing",
            description="paint an object with the texture of a patch",
            slots=(Slot("object", help="the object to re-texture"), Slot("texture", help="a patch of the texture")),
            dropout=DropoutRule(independent=0.25),
            guidance_scale=8.0,
            recipe="texturing",
            generator="texturing",
            stream_id=1,
            aliases=("texture",),
        ),
        OperatorSpec(
            kind="union",
            description="one embedding holding both objects",
            slots=(Slot("object_a", help="first object"), Slot("object_b", help="second object")),
            dropout=DropoutRule(joint=0.2),
            guidance_scale=8.0,
            swap_inputs=True,
            recipe="union",
            generator="union",
            stream_id=2,
        ),
        OperatorSpec(
            kind="scene",
            description="place an object in a scene",
            slots=(Slot("object", help="the object, on white"), Slot("scene", help="the empty scene")),
            dropout=DropoutRule(joint=0.1),
            guidance_scale=1.0,
            recipe="scene",
            generator="scene",
            stream_id=3,
        ),
        OperatorSpec(
            kind="instruct",
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
        ),
        OperatorSpec(
            kind="composition",
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
        ),
    )
}


def get_spec(kind: str) -> OperatorSpec:
    """The registry entry for `kind`; a ValueError naming the known operators otherwise."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown operator {kind!r}; known operators: {', '.join(REGISTRY)}") from None
