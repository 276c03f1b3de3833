"""Constants of the reference recipe (DESIGN §2) that several rooms need, in a module that imports nothing heavy:
the CLI, the configs and the models folder read them without pulling in diffusers."""

from __future__ import annotations

# The Kandinsky 2.2 prior (PriorTransformer + CLIP ViT-bigG/14 image and text encoders in subfolders).
KANDINSKY_PRIOR = "kandinsky-community/kandinsky-2-2-prior"
KANDINSKY_DECODER = "kandinsky-community/kandinsky-2-2-decoder"
# The paper's other models on the hub (DESIGN.md §2); the released operators.
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
IP_ADAPTER_REPO = "h94/IP-Adapter"
IP_ADAPTER_WEIGHT = "sdxl_models/ip-adapter_sdxl.bin"
CONTROLNET_DEPTH = "diffusers/controlnet-depth-sdxl-1.0"
DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"
FP16_FIX_VAE = "madebyollin/sdxl-vae-fp16-fix"  # the reference's VAE for the depth pipeline (fp16-safe)
RELEASED_OPERATORS = "pOpsPaper/operators"  # models/{texturing,union,scene,instruct}/learned_prior.pth
RELEASED_KINDS = ("texturing", "union", "scene", "instruct")
RELEASED_CHECKPOINT = "models/{kind}/learned_prior.pth"  # inside RELEASED_OPERATORS (or a local copy of it)
# Licences as the hub model cards state them; the operators' card names the paper.
RELEASED_LICENSE = "mit"
KANDINSKY_LICENSE = "apache-2.0"
PAPER = "pOps: Photo-Inspired Diffusion Operators (Richardson, Alaluf, Mahdavi-Amiri, Cohen-Or), arXiv:2406.01300"

# The prior's two condition layouts: the reference's 77 padded rows, or only the used rows (same function).
LAYOUTS = ("compact", "padded")

NUM_TRAIN_TIMESTEPS = 1000
# The training objectives (pops.core.objective): the reference's diffusion x0 objective, or ECLIPSE's one-pass
# regression; and the call each trains for — the sampler (pops.core.sampler.SAMPLERS) and steps its operator uses by
# default. `ddim` with 1 step is exactly the one-pass call: trailing timesteps start at t = 999 and the one step
# returns the prediction.
OBJECTIVES = ("diffusion", "one-pass")
# Where instruct's text-alignment cosine is measured: the reference's raw embedding space, or centred on the
# embeddings' mean (pops.core.objective).
ALIGNMENTS = ("raw", "centred")
# The reference's sampling call (its prior pipeline): the UnCLIP ancestral loop, 25 steps. An operator samples this way
# unless it was made for another call (a distilled student, a one-pass operator) or told otherwise.
DEFAULT_SAMPLER = "unclip"
DEFAULT_STEPS = 25
OBJECTIVE_SAMPLING = {"diffusion": (DEFAULT_SAMPLER, DEFAULT_STEPS), "one-pass": ("ddim", 1)}
# DDPMScheduler of the objective: x0-prediction, cosine schedule.
TRAINING_SCHEDULER_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2", prediction_type="sample"
)
# UnCLIPScheduler of the reference sampling loop.
SAMPLING_SCHEDULER_CONFIG = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    variance_type="fixed_small_log",
    clip_sample=True,
    clip_sample_range=10.0,
    prediction_type="sample",
    beta_schedule="squaredcos_cap_v2",
)

# Our operator folder: weights, config (kind, prior config, clip statistics, schedulers, encoders), model card.
OPERATOR_CONFIG_NAME = "pops_config.json"
OPERATOR_WEIGHTS_NAME = "model.safetensors"


def is_joint_config(config: dict) -> bool:
    """True for the config of a joint folder (one prior for several operators, pops.operators.joint): its `operators`
    entry maps each operator it holds to that operator's settings, where an ordinary folder names one `kind`."""
    return isinstance(config.get("operators"), dict)
