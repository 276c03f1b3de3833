"""How the demo trains each operator of the embedded world: its own recipe beside the shared one (`DemoConfig`).

The registry holds what the paper says of an operator; these are the demo's choices, each kept on validation classes
over world seeds 0-4 (docs/EXPERIMENTS.md has the measurements). Light on purpose: `pops demo --help` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pops.base.registry import REGISTRY


@dataclass(frozen=True)
class DemoRecipe:
    """How the demo trains one operator of the embedded world, beyond its shared recipe (docs/EXPERIMENTS.md has the
    measurements behind each number)."""

    # Training samples per training class (each a fresh jitter), in the full demo and with --quick.
    train_per_class: int = 1
    quick_train_per_class: int = 1
    # Training-only combinations its world adds (procedural objects, further outfits; pops.world.WorldConfig.
    # training_only); --quick draws a quarter of them.
    training_only: int = 0
    # Dropout inside the transformer blocks, and a factor on the batch size: both regularise the small operators
    # against memorising their training combinations.
    dropout: float = 0.0
    batch_factor: int = 1
    # The relative cost of training and evaluating it: the costliest start first, so worker processes finish together.
    job_cost: float = 1.0


DEMO_RECIPES: dict[str, DemoRecipe] = {
    "texturing": DemoRecipe(train_per_class=3, dropout=0.1, batch_factor=2, job_cost=6.0),
    "union": DemoRecipe(),
    "scene": DemoRecipe(train_per_class=3, quick_train_per_class=2, dropout=0.1, batch_factor=2, job_cost=5.5),
    "instruct": DemoRecipe(train_per_class=6, quick_train_per_class=2, dropout=0.1, batch_factor=2, job_cost=8.0),
    "composition": DemoRecipe(quick_train_per_class=2, training_only=672, job_cost=4.0),
}


def demo_recipe(kind: str) -> DemoRecipe:
    """The demo's recipe for `kind`: its entry, or the shared recipe for an operator the demo has none for."""
    return DEMO_RECIPES.get(kind, DemoRecipe())


def default_train_per_class(quick: bool = False) -> dict[str, int]:
    """Training samples per training class (each a fresh jitter), per operator, from its demo recipe."""
    return {k: demo_recipe(k).quick_train_per_class if quick else demo_recipe(k).train_per_class for k in REGISTRY}


def default_training_only(quick: bool = False) -> dict[str, int]:
    """Training-only combinations per operator (procedural objects, further outfits), from its demo recipe."""
    counts = {k: demo_recipe(k).training_only for k in REGISTRY}
    return {k: n // 4 if quick else n for k, n in counts.items() if n}
