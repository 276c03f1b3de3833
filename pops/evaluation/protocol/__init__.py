"""The paper's instruct evaluation (arXiv 2406.01300, Table 1) as one call: `run_protocol(out=..., inputs=... |
generate_inputs=True, ...)` edits 52 objects x 65 adjectives x 3 seeds with pOps (the released instruct operator,
rendered by the Kandinsky 2.2 decoder), InstructPix2Pix and SDXL + IP-Adapter at scales 0.5 and 0.1, scores every
edit with the paper's three metrics (CLIP image similarity, CLIP ViT-L/14 text similarity, BLIP-2 caption
similarity) and prints the means beside the paper's numbers.

Importing this package loads nothing heavy; the models load when `run_protocol` runs.
"""

from pops.evaluation.protocol.paper import METHODS, MODELS, PAPER_TABLE
from pops.evaluation.protocol.plan import ProtocolConfig, parse_models, parse_settings
from pops.evaluation.protocol.results import format_table
from pops.evaluation.protocol.runner import run_protocol

__all__ = [
    "METHODS",
    "MODELS",
    "PAPER_TABLE",
    "ProtocolConfig",
    "format_table",
    "parse_models",
    "parse_settings",
    "run_protocol",
]
