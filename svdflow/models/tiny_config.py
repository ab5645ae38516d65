"""`builtin:tiny`'s UNet config, as plain data: what its `unet/config.json` would hold.

Kept apart from `tiny.py` (which imports torch to build the weights) so that validating a manifest
can read the model's own `num_frames` without importing torch.
"""

from __future__ import annotations

# Recorded as the "revision" of builtin:tiny. Bump it whenever anything changes the tiny pipeline's
# weights or configs (here or in pipeline/tiny.py), so that old index entries are not silently
# re-rendered differently.
TINY_REVISION = "builtin-tiny-v1"

# UNetSpatioTemporalConditionModel's arguments. Changing any of them changes the tiny weights:
# bump TINY_REVISION with it.
TINY_UNET_CONFIG: dict = {
    "sample_size": 32,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),
    "addition_time_embed_dim": 32,
    "projection_class_embeddings_input_dim": 3 * 32,
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    # Heads 16 and 32 wide: with 8 heads 4 wide, CPU attention kernels made the UNet ~1.6x
    # slower for the same arithmetic.
    "num_attention_heads": 2,
    "num_frames": 25,
}
