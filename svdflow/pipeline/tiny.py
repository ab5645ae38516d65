"""SVD pipelines built from code: `builtin:tiny`, and the full-size architectures with random weights.

Both are real `StableVideoDiffusionPipeline`s (same classes, same scheduler, same call), so code that
works with them works with the downloaded models; only the sizes and the weights differ.

Weights are not left to the libraries' default initialisers: every parameter is drawn from its own
generator seeded by the parameter's name. The tiny pipeline's frames therefore depend neither on the
caller's global RNG state nor on how a diffusers / transformers release happens to initialise
layers, which is what lets `builtin-tiny-v1` (models/tiny_config.TINY_REVISION) name one fixed set of
weights in an index.
"""

from __future__ import annotations

import zlib

import torch
import transformers
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from svdflow.models.tiny_config import TINY_UNET_CONFIG

# stabilityai/stable-video-diffusion-img2vid{,-xt} scheduler/scheduler_config.json (identical in both);
# the keys EulerDiscreteScheduler does not take (clip_sample, set_alpha_to_one, skip_prk_steps) are left out.
SVD_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# feature_extractor/preprocessor_config.json of the same repositories.
SVD_FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}

# unet/config.json; only num_frames differs between SVD (14) and SVD-XT (25).
SVD_UNET_CONFIG = {
    "addition_time_embed_dim": 256,
    "block_out_channels": (320, 640, 1280, 1280),
    "cross_attention_dim": 1024,
    "down_block_types": (
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ),
    "in_channels": 8,
    "layers_per_block": 2,
    "num_attention_heads": (5, 10, 20, 20),
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 768,
    "sample_size": 96,
    "transformer_layers_per_block": 1,
    "up_block_types": (
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    ),
}

# vae/config.json
SVD_VAE_CONFIG = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "out_channels": 3,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}

# image_encoder/config.json: OpenCLIP ViT-H/14's vision tower.
SVD_IMAGE_ENCODER_CONFIG = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "projection_dim": 1024,
}

FULL_SIZE_NUM_FRAMES = {"svd": 14, "xt": 25}

_NORM_TYPES = (torch.nn.GroupNorm, torch.nn.LayerNorm)


def _image_processor_class() -> type:
    # transformers 5 made CLIPImageProcessor the torchvision backend: without torchvision it warns
    # and falls back to CLIPImageProcessorPil. Asking for the PIL one directly keeps the tiny
    # pipeline's preprocessing (hence its frames) the same whether or not torchvision is installed.
    # transformers 4 has no CLIPImageProcessorPil; its CLIPImageProcessor is the PIL one.
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _materialize_random_(
    model: torch.nn.Module, prefix: str, *, device: str | torch.device, dtype: torch.dtype
) -> None:
    """Replace every (meta) parameter of `model` with a fixed pseudo-random tensor on `device`.

    Norm layers get their identity (weight 1, bias 0) and biases are 0; every other tensor is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's own scale for Linear and Conv weights. A wider
    draw (N(0, 1/fan_in) was tried) saturates the attention softmaxes into float32 denormals, which
    made CPU renders about three times slower. On the meta device nothing is allocated.
    """
    device = torch.device(device)
    for module_name, module in model.named_modules():
        for param_name, param in list(module.named_parameters(recurse=False)):
            if device.type == "meta":
                value = torch.empty(param.shape, device=device, dtype=dtype)
            elif isinstance(module, _NORM_TYPES):
                value = torch.full(
                    param.shape, 1.0 if param_name == "weight" else 0.0, device=device, dtype=dtype
                )
            elif param_name == "bias":
                value = torch.zeros(param.shape, device=device, dtype=dtype)
            else:
                fan_in = param[0].numel() if param.ndim > 1 else param.numel()
                value = _uniform(
                    param.shape, fan_in**-0.5, f"{prefix}.{module_name}.{param_name}", device, dtype
                )
            module._parameters[param_name] = torch.nn.Parameter(value)
    if device.type != "meta":
        model.to(device)  # the buffers (CLIP's position ids) were built for real on the CPU
    model.eval()


# A CPU generator draws some 50M numbers/s on one core: drawing each of SVD-XT's 2.25B parameters
# would take most of a minute. On the CPU, larger tensors repeat a block of this many draws instead
# (weights for timing runs need the right shapes, not independent values). No tiny tensor is this
# large, so the tiny weights are fully random; GPUs draw everything.
_CPU_MAX_DRAW = 1 << 20


def _uniform(
    shape: torch.Size, bound: float, name: str, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    numel = shape.numel()
    drawn = min(numel, _CPU_MAX_DRAW) if device.type == "cpu" else numel
    generator = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()))
    # Drawn in float32 so a float16 model gets the same values rounded, not another draw.
    block = torch.empty(drawn, device=device, dtype=torch.float32)
    block.uniform_(-bound, bound, generator=generator)
    block = block.to(dtype)
    if drawn == numel:
        return block.view(shape)
    flat = torch.empty(numel, device=device, dtype=dtype)
    for start in range(0, numel, drawn):
        stop = min(start + drawn, numel)
        flat[start:stop] = block[: stop - start]
    return flat.view(shape)


def _assemble(
    unet: UNetSpatioTemporalConditionModel,
    vae: AutoencoderKLTemporalDecoder,
    image_encoder: CLIPVisionModelWithProjection,
    feature_extractor_config: dict,
) -> StableVideoDiffusionPipeline:
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=_image_processor_class()(**feature_extractor_config),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_pipeline(dtype: torch.dtype = torch.float32) -> StableVideoDiffusionPipeline:
    """The `builtin:tiny` pipeline: SVD's architecture at toy widths, fixed weights, on the CPU.

    In another `dtype` the weights are the float32 ones rounded (built so, rather than converted
    with `.to()`, which diffusers warns about).

    The VAE keeps SVD's four down blocks (latents 1/8 of the frame, as in the real model) and CLIP
    keeps its 224 px input, so every width/height/num_frames that works here works on the real model.
    """
    # Meta construction draws nothing from the RNG today; fork_rng keeps the promise if a library
    # version starts to, so building never shifts the caller's random stream.
    with torch.random.fork_rng(devices=[]), init_empty_weights(include_buffers=False):
        unet = UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
            scaling_factor=0.18215,
            force_upcast=True,
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                image_size=224,
                patch_size=32,
                hidden_act="gelu",
                layer_norm_eps=1e-5,
            )
        )
    for name, model in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        _materialize_random_(model, f"tiny.{name}", device="cpu", dtype=dtype)
    return _assemble(unet, vae, image_encoder, SVD_FEATURE_EXTRACTOR_CONFIG)


def build_full_size_pipeline(
    variant: str = "xt",
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cpu",
) -> StableVideoDiffusionPipeline:
    """SVD (`variant="svd"`, 14 frames) or SVD-XT (`"xt"`, 25 frames) with random weights.

    For benchmarks without the gated download: same configs, so same shapes, FLOPs and memory as the
    real checkpoints. Weights are allocated directly in `dtype` on `device`, never as a float32 model
    first (each tensor is drawn in float32 and rounded, one at a time); `device="meta"` allocates
    nothing, for counting parameters. Building on the CPU took 50-90 s on a busy 2-core machine;
    drawing on a GPU is fast, so pass `device="cuda"` rather than moving a CPU build.
    """
    if variant not in FULL_SIZE_NUM_FRAMES:
        raise ValueError(f"variant must be one of {sorted(FULL_SIZE_NUM_FRAMES)}, got {variant!r}")
    with torch.random.fork_rng(devices=[]), init_empty_weights(include_buffers=False):
        unet = UNetSpatioTemporalConditionModel(**SVD_UNET_CONFIG, num_frames=FULL_SIZE_NUM_FRAMES[variant])
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_IMAGE_ENCODER_CONFIG))
    for name, model in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        _materialize_random_(model, f"{variant}.{name}", device=device, dtype=dtype)
    return _assemble(unet, vae, image_encoder, SVD_FEATURE_EXTRACTOR_CONFIG)
