"""pOps: photo-inspired diffusion operators over image embeddings."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Operator", "JointOperator", "REGISTRY", "get_spec", "apply"]


def __getattr__(name):
    # Lazy: `import pops` stays cheap (the CLI imports torch/diffusers only when a command needs them).
    if name == "Operator":
        from pops.operators.operator import Operator

        return Operator
    if name == "JointOperator":
        from pops.operators.joint import JointOperator

        return JointOperator
    if name in ("REGISTRY", "get_spec"):
        from pops.base import registry

        return getattr(registry, name)
    if name == "apply":
        from pops.equation import apply

        return apply
    raise AttributeError(f"module 'pops' has no attribute {name!r}")
