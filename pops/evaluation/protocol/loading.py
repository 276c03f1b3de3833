"""Loading the protocol's models, each once and only when a part of the run needs it, and the input pictures."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from pops.evaluation.protocol import paper
from pops.evaluation.protocol.inputs import folder_pictures, generated_path, load_text_to_image, read_picture
from pops.evaluation.protocol.scoring import quiet_loading

if TYPE_CHECKING:
    from pops.evaluation.protocol.plan import Plan


def free(device) -> None:
    """Give back the memory of models just dropped."""
    gc.collect()
    if getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.empty_cache()


class Models:
    """The models of one run, loaded when first needed; the ViT-bigG image encoder is loaded once and shared by the
    metric, the operator and IP-Adapter's input embeddings."""

    def __init__(self, plan: Plan):
        self.sources, self.settings = plan.sources, plan.settings
        self.device, self.dtype, self.generator_device = plan.device, plan.dtype, plan.config.generator_device
        self._bigg = None
        self._sdxl = None

    def bigg(self):
        if self._bigg is None:
            from pops.encoders.clip import CLIPImageEncoder

            with quiet_loading():
                self._bigg = CLIPImageEncoder.from_pretrained(
                    self.sources["base"], device=self.device, dtype=self.dtype
                )
        return self._bigg

    def scorer(self, image_model: str):
        from pops.encoders.minilm import MiniLMEncoder
        from pops.evaluation.protocol.scoring import Captioner, Scorer, clip_pair

        clip_image, clip_text = clip_pair(self.sources["clip_l14"], device=self.device, dtype=self.dtype)
        with quiet_loading():
            sentence = MiniLMEncoder(self.sources["sentence"])
        return Scorer(
            similarity=self.bigg() if image_model == "bigG" else clip_image,
            clip_image=clip_image,
            clip_text=clip_text,
            captioner=Captioner.from_pretrained(
                self.sources["blip2"], device=self.device, dtype=self.dtype, max_tokens=self.settings["caption_tokens"]
            ),
            sentence=sentence,
            text_template=self.settings["text_template"],
            caption_template=self.settings["caption_template"],
        )

    def pops(self, operator_folder):
        from pops.encoders.clip import CLIPImageEncoder
        from pops.evaluation.protocol.methods import PopsEditor
        from pops.operators.operator import Operator
        from pops.renderers.kandinsky import KandinskyRenderer

        s = self.settings
        if operator_folder is not None:
            op = Operator.from_pretrained(operator_folder, kind="instruct")
        else:
            op = Operator.from_pretrained(self.sources["base"], checkpoint=self.sources["checkpoint"], kind="instruct")
        if op.kind != "instruct":
            raise ValueError(f"{operator_folder}: a {op.kind} operator; the protocol needs an instruct operator")
        op.to(device=self.device, dtype=self.dtype)
        if op.text_encoder is None:  # built here, while loading is quiet, rather than at the first edit
            raise ValueError("the instruct operator names no text encoder, so it cannot read the adjectives")
        image = (op.encoder_configs or {}).get("image") or {}
        if image.get("type") == "clip-image" and str(image.get("repo")) in (paper.MODELS["base"], self.sources["base"]):
            # The operator reads pictures with the same ViT-bigG: share the loaded one, with the operator's resize.
            bigg = self.bigg()
            op.image_encoder = CLIPImageEncoder(
                bigg.model, bigg.processor, device=self.device, dtype=self.dtype, resize=image.get("resize")
            )
        renderer = KandinskyRenderer.from_pretrained(
            self.sources["decoder"],
            negative_embedding=self.bigg().zero_image_embedding(),
            device=self.device,
            dtype=self.dtype,
            num_inference_steps=s["decoder_steps"],
            guidance_scale=s["decoder_guidance"],
            size=s["decoder_size"],
        )
        return PopsEditor(op, renderer, steps=s["prior_steps"], generator_device=self.generator_device)

    def instructpix2pix(self):
        from pops.evaluation.protocol.methods import InstructPix2PixEditor

        s = self.settings
        return InstructPix2PixEditor.from_pretrained(
            self.sources["instructpix2pix"],
            device=self.device,
            dtype=self.dtype,
            prompt=s["instructpix2pix_prompt"],
            steps=s["instructpix2pix_steps"],
            guidance_scale=s["instructpix2pix_guidance"],
            image_guidance_scale=s["instructpix2pix_image_guidance"],
            generator_device=self.generator_device,
        )

    def ip_adapter(self, scale: float):
        from pops.evaluation.protocol.methods import IPAdapterEditor
        from pops.renderers.ipadapter import IPAdapterRenderer

        s = self.settings
        if self._sdxl is None:  # one SDXL for both scales
            weights = Path(self.sources["ip_adapter"])
            self._sdxl = IPAdapterRenderer.from_pretrained(
                self.sources["sdxl"],
                ip_adapter=str(weights.parent),
                ip_adapter_weight=weights.name,
                device=self.device,
                dtype=self.dtype,
                num_inference_steps=s["sdxl_steps"],
                guidance_scale=s["sdxl_guidance"],
                size=s["sdxl_size"],
            )
        return IPAdapterEditor(
            self._sdxl, self.bigg(), scale=scale, prompt=s["ip_adapter_prompt"], generator_device=self.generator_device
        )

    def editor(self, method: str, operator_folder):
        with quiet_loading():
            if method == "pops":
                return self.pops(operator_folder)
            if method == "instructpix2pix":
                return self.instructpix2pix()
            return self.ip_adapter(paper.IP_ADAPTER_SCALES[method])

    def release_sdxl(self) -> None:
        self._sdxl = None
        free(self.device)


def input_pictures(plan: Plan) -> list:
    """The input picture of every object: read from --inputs, or drawn by SDXL-Turbo into OUT/inputs/ (kept, so a
    rerun draws only what is missing)."""
    config, objects, settings, out = plan.config, plan.objects.words, plan.settings, plan.out
    device, dtype = plan.device, plan.dtype
    size = settings["input_size"]
    if config.inputs is not None:
        paths = folder_pictures(config.inputs, objects)
        return [read_picture(paths[o], size) for o in objects]
    folder = out / "inputs"
    missing = [o for o in objects if not generated_path(folder, o).is_file()]
    if missing:
        from pops.base.devices import make_generator
        from pops.base.files import atomic_write

        with quiet_loading():
            draw = load_text_to_image(
                plan.sources["sdxl_turbo"], device=device, dtype=dtype, steps=settings["turbo_steps"], size=size
            )
        folder.mkdir(parents=True, exist_ok=True)
        for obj in tqdm(missing, desc="input pictures", disable=not config.progress):
            picture = draw(settings["input_prompt"].format(object=obj), make_generator(config.input_seed))
            atomic_write(generated_path(folder, obj), lambda tmp, p=picture: p.save(tmp, format="PNG"))
        del draw
        free(device)
    return [read_picture(generated_path(folder, o), size) for o in objects]
