"""`builtin:toy`'s configs, as plain data: what its `*/config.json` files hold.

The toy is a Stable Video Diffusion pipeline (same classes, same scheduler, same call) at toy widths,
trained by `training/train_toy.py` on synthetic camera pans. Its weights ship as package data in
`svdflow/models/toy/`; these configs are what the training script builds and what validation reads
(num_frames) without importing torch.
"""

from __future__ import annotations

# Recorded as the "revision" of builtin:toy. Bump it with every retraining or config change, so
# that old index entries are not silently re-rendered differently.
TOY_REVISION = "builtin-toy-v1"

# Frames the toy was trained on (its default num_frames). Eight keeps training and CPU renders short.
TOY_NUM_FRAMES = 8

# The size it was trained at (a 16:9 frame, latents 32x18); other sizes work but move less reliably.
TOY_WIDTH, TOY_HEIGHT = 256, 144

# Latent channels, as in SVD. Three carry the frame's colours (8x8 averages), the fourth stays zero.
TOY_LATENT_CHANNELS = 4

# Every GroupNorm in these classes has 32 groups. A group of one or two channels normalises a
# uniform region to the same value whatever its colour, so the layers that end in a GroupNorm
# (the UNet's first level, the VAE's encoder end and decoder end) have three channels a group (96):
# that is what lets the frames keep the input's colour levels.
# SVD's scheduler config but for these: the UNet predicts the clean latents ("sample", x0) rather
# than v. Its starting point, a pass-through of the conditioning frame, is then already the right
# answer for frame 0 at every noise level, which is what lets a few hundred CPU steps teach it the
# motion. Outside v-prediction the scheduler feeds the UNet discrete timesteps, and every sigma above
# the training schedule's largest (14.6) maps to timestep 999; a schedule starting higher repeats
# 999, which throws EulerDiscreteScheduler's step count off, so sampling starts at 14.6.
TOY_SCHEDULER_OVERRIDES = {"prediction_type": "sample", "sigma_max": 14.6}

# Per-job defaults the toy sets where a manifest is silent: no classifier-free guidance. The toy is
# trained without an unconditional branch, so guidance would only scale its frames' contrast up.
TOY_DEFAULTS = {"min_guidance_scale": 1.0, "max_guidance_scale": 1.0}

TOY_UNET_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 2 * TOY_LATENT_CHANNELS,
    "out_channels": TOY_LATENT_CHANNELS,
    # Attention only in the mid block (16x9 at 256x144): the weights stay under 25 MB.
    "down_block_types": ("DownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
    "block_out_channels": (96, 96),
    "addition_time_embed_dim": 32,
    "projection_class_embeddings_input_dim": 3 * 32,
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": (3, 3),
    "num_frames": TOY_NUM_FRAMES,
}

TOY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    # Four blocks: latents 1/8 of the frame, as in SVD, so every size that works here works there.
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "block_out_channels": (96, 32, 32, 96),
    "layers_per_block": 1,
    "latent_channels": TOY_LATENT_CHANNELS,
    "sample_size": 256,
    "scaling_factor": 1.0,  # set by training to 1 / the latents' standard deviation
    "force_upcast": True,
}

# CLIPVisionConfig's arguments: small, with random weights kept fixed (its embedding still carries
# the image to the UNet's cross-attention).
TOY_IMAGE_ENCODER_CONFIG: dict = {
    "hidden_size": 32,
    "projection_dim": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}
