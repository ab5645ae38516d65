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

# Latent channels: eight rather than SVD's four, so a VAE trained for minutes still reconstructs
# frames sharply enough for the first frame to match the input.
TOY_LATENT_CHANNELS = 8

TOY_UNET_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 2 * TOY_LATENT_CHANNELS,
    "out_channels": TOY_LATENT_CHANNELS,
    "down_block_types": (
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ),
    "up_block_types": (
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    ),
    "block_out_channels": (32, 64, 64),
    "addition_time_embed_dim": 32,
    "projection_class_embeddings_input_dim": 3 * 32,
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": (1, 2, 2),
    "num_frames": TOY_NUM_FRAMES,
}

TOY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    # Four blocks: latents 1/8 of the frame, as in SVD, so every size that works here works there.
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    # The encoder ends in GroupNorm(32 groups): 128 channels leave 4 a group, so the latents keep each
    # image's colour levels (with 1 or 2 a group a uniform region normalises to the same value
    # whatever its colour). The decoder's full-resolution blocks stay at 32 channels for CPU speed.
    "block_out_channels": (32, 32, 64, 128),
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
