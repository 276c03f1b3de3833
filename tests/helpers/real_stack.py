"""Tiny random components of the real classes — CLIP ViT encoders, the Kandinsky 2.2 decoder, SDXL with
IP-Adapter weights, a depth ControlNet, a DPT depth estimator — and the hub layouts they are saved in (a Kandinsky
prior repo, the released operators repo). Nothing is downloaded."""

from __future__ import annotations

import torch

from tests.helpers.priors import tiny_prior

D = 32  # the tiny "bigG" embedding width
SIZE = 32  # rendered image side


def text_config(tokenizer, projection_dim=D):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_vision():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=D,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModelWithProjection(config), processor


def tiny_kandinsky_decoder():
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,
        addition_embed_type="image",
        encoder_hid_dim=D,
        encoder_hid_dim_type="image_proj",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        norm_num_groups=8,
    )
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(
        beta_schedule="linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, variance_type="learned_range"
    )
    return dict(unet=unet, movq=movq, scheduler=scheduler)


def tiny_sdxl(tokenizer):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(2)
    # cross_attention_dim = both text encoders' widths; 80 = text_encoder_2 projection (32) + 6 time ids x 8.
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    return dict(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=CLIPTextModel(text_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(tokenizer)),
    )


def tiny_ip_adapter_state_dict(unet):
    """Random weights in the layout of `ip-adapter_sdxl.bin`: image_proj {proj, norm} (4 tokens) and ip_adapter
    {"<k>.to_k_ip.weight", "<k>.to_v_ip.weight"} for every cross-attention processor, k = 1, 3, 5, …"""
    g = torch.Generator().manual_seed(3)
    cross = unet.config.cross_attention_dim
    image_proj = {
        "proj.weight": torch.randn(4 * cross, D, generator=g) * 0.1,
        "proj.bias": torch.zeros(4 * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter = {}
    cross_attentions = [m for name, m in unet.named_modules() if name.endswith("attn2")]
    for i, attn in enumerate(cross_attentions):
        hidden = attn.to_k.weight.shape[0]
        ip_adapter[f"{2 * i + 1}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.1
        ip_adapter[f"{2 * i + 1}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.1
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def tiny_controlnet(unet):
    from diffusers import ControlNetModel

    # One downsampling step in the condition embedding, matching the tiny VAE's factor 2.
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    torch.manual_seed(4)
    with torch.no_grad():  # ControlNet's zero convolutions start at zero; give them weight so structure matters
        for name, p in net.named_parameters():
            if "controlnet_" in name or "conv_out" in name:
                p.normal_(0, 0.5)
    return net


def tiny_depth_estimator():
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(5)
    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        backbone_out_indices=[0, 1],
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1],
        fusion_hidden_size=16,
        head_in_index=-1,
    )
    return DPTForDepthEstimation(config), DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False)


# ----- the hub layouts ----------------------------------------------------------------------------------------------
def released_state(seed: int, prefix: str = "", dim: int = 32) -> dict:
    """A released checkpoint's contents: the PriorTransformer state dict without the clip statistics."""
    from pops.operators.checkpoint import CLIP_STATS

    state = tiny_prior(dim=dim, seed=seed).state_dict()
    return {prefix + k: v for k, v in state.items() if k not in CLIP_STATS}


def write_hub(root):
    """Local copies in the hub layouts under `root`: the Kandinsky prior repo (prior/, image_encoder/,
    image_processor/), the released operators repo (models/<kind>/learned_prior.pth; texturing written by a
    torch.compile run) and the Kandinsky decoder."""
    from diffusers import KandinskyV22Pipeline

    tiny_prior(seed=0).save_pretrained(root / "kandinsky-2-2-prior" / "prior")
    model, processor = tiny_vision()
    model.save_pretrained(root / "kandinsky-2-2-prior" / "image_encoder")
    processor.save_pretrained(root / "kandinsky-2-2-prior" / "image_processor")
    for kind, seed, prefix in (("texturing", 1, "_orig_mod."), ("union", 2, "")):
        (root / "operators" / "models" / kind).mkdir(parents=True)
        torch.save(released_state(seed, prefix), root / "operators" / "models" / kind / "learned_prior.pth")
    KandinskyV22Pipeline(**tiny_kandinsky_decoder()).save_pretrained(root / "kandinsky-2-2-decoder")
    return root
