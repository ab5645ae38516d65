"""Weights set by construction for builtin:toy: the VAE as a whole, the UNet as a starting point.

The VAE is not trained. Trained from scratch for minutes on a shared 2-core machine it reconstructed
nothing recognisable (reconstruction loss still at the predict-the-mean level after 150 steps), so
its weights are set: the encoder averages each 8x8 block of RGB (three 2x2 averaging stride-2
convolutions), the decoder upsamples bilinearly (three nearest-neighbour x2 + [1 2 1]/4 blur
convolutions), and every residual branch and attention output starts at zero, so the blocks pass
their input through. An 8x8 average upsampled again keeps SSIM 0.82-0.92 to the input on the
sample and held-out images (measured), which is what the first frame needs.

The only non-linear layers left on the path are the GroupNorm + SiLU at the ends. A GroupNorm
subtracts each group's mean: with the signal in a group as (s, -s, K) the mean is K/3 whatever s
is and the spread is nearly K's, so the normalised s is s up to a known offset and scale, which
the norm's affine and the next convolution undo (SiLU is the identity to 1e-7 around 20).

The UNet starts as the same pass-through of the conditioning latents to its output (it predicts
the clean latents, x0), with zero-initialised residual branches and attention outputs ("zero-init
residual"), so training starts from a model whose every frame is the input, at every noise level,
and has only the motion to learn.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D, TemporalResnetBlock
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

K = 300.0  # the constant channel of a (s, -s, K) group: large next to any signal, small for float32
LIFT = 20.0  # the SiLU's operating point: SiLU(20 + x) = 20 + x to 1e-7 for |x| < 3


def _zero_(*params: torch.Tensor) -> None:
    for p in params:
        if p is not None:
            p.data.zero_()


@torch.no_grad()
def zero_residual_branches_(model: torch.nn.Module) -> None:
    """Every residual branch's last layer and every residual attention's output to zero."""
    for module in model.modules():
        if isinstance(module, (ResnetBlock2D, TemporalResnetBlock)):
            _zero_(module.conv2.weight, module.conv2.bias)
        elif isinstance(module, TransformerSpatioTemporalModel):
            _zero_(module.proj_out.weight, module.proj_out.bias)
        elif isinstance(module, Attention) and module.residual_connection:
            _zero_(module.to_out[0].weight, module.to_out[0].bias)


def _center(conv: torch.nn.Conv2d, out: int, inp: int, value: float) -> None:
    kh, kw = conv.weight.shape[2:]
    conv.weight.data[out, inp, kh // 2, kw // 2] = value


def _shortcut(conv: torch.nn.Conv2d, mapping: dict[int, float], bias: dict[int, float] | None = None,
              offset: int = 0) -> None:
    """A 1x1 shortcut: output channel o = sum of w * input channel (offset + i) for (o, (i, w))."""
    conv.weight.data.zero_()
    conv.bias.data.zero_()
    for o, (i, w) in mapping.items():
        conv.weight.data[o, offset + i, 0, 0] = w
    for o, b in (bias or {}).items():
        conv.bias.data[o] = b


def _average_2x2(conv: torch.nn.Conv2d, channels: int) -> None:
    conv.weight.data.zero_()
    conv.bias.data.zero_()
    for c in range(channels):
        conv.weight.data[c, c, 0:2, 0:2] = 0.25


def _bilinear_x2(conv: torch.nn.Conv2d, channels: int) -> None:
    """After nearest-neighbour x2, a [1 2 1]/4 blur each way is bilinear interpolation."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    conv.weight.data.zero_()
    conv.bias.data.zero_()
    for c in range(channels):
        conv.weight.data[c, c] = torch.outer(kernel, kernel)


def _signed_groups(group_size: int, signals: int) -> tuple[dict[int, tuple[int, float]], dict[int, float]]:
    """Shortcut mapping that lays signal i out as the group (s, -s, K[, 0...])."""
    mapping, bias = {}, {}
    for i in range(signals):
        mapping[group_size * i] = (i, 1.0)
        mapping[group_size * i + 1] = (i, -1.0)
        bias[group_size * i + 2] = K
    return mapping, bias


def _unnormalise(norm: torch.nn.GroupNorm, conv_out: torch.nn.Conv2d, signals: int, gain: float) -> None:
    """GroupNorm over (s, -s, K, 0...) groups, SiLU, then conv_out: output i = gain * s_i + 0."""
    size = norm.num_channels // norm.num_groups
    mean = K / size
    spread = (K**2 / size - mean**2) ** 0.5  # the group's standard deviation when s = 0
    norm.weight.data.zero_()
    norm.bias.data.zero_()
    conv_out.weight.data.zero_()
    conv_out.bias.data.zero_()
    for i in range(signals):
        norm.weight.data[size * i] = spread
        norm.bias.data[size * i] = LIFT + mean
        _center(conv_out, i, size * i, gain)
        conv_out.bias.data[i] = -LIFT * gain


@torch.no_grad()
def construct_vae_(vae) -> None:
    """The 8x8-average encoder and bilinear decoder described above, for RGB in latent channels 0-2."""
    for p in vae.parameters():
        p.data.zero_()
    for module in vae.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.weight.data.fill_(1.0)
    enc, dec = vae.encoder, vae.decoder
    for c in range(3):
        _center(enc.conv_in, c, c, 1.0)
    for block in enc.down_blocks:
        for resnet in block.resnets:
            if resnet.conv_shortcut is not None:
                if resnet.conv_shortcut.out_channels == enc.conv_norm_out.num_channels:
                    size = enc.conv_norm_out.num_channels // enc.conv_norm_out.num_groups
                    _shortcut(resnet.conv_shortcut, *_signed_groups(size, 3))
                else:
                    _shortcut(resnet.conv_shortcut, {c: (c, 1.0) for c in range(3)})
        for down in block.downsamplers or []:
            _average_2x2(down.conv, down.conv.out_channels)
    # Encoder end: mean channels 0-2 = the averages, logvar channels a small constant.
    _unnormalise(enc.conv_norm_out, enc.conv_out, 3, 1.0)
    latent = vae.config.latent_channels
    enc.conv_out.bias.data[latent:] = -20.0
    vae.quant_conv.weight.data[:, :, 0, 0] = torch.eye(2 * latent)
    for c in range(3):
        _center(dec.conv_in, c, c, 1.0)
    for block in dec.up_blocks:
        for resnet in block.resnets:
            shortcut = resnet.spatial_res_block.conv_shortcut
            if shortcut is not None:
                if shortcut.out_channels == dec.conv_norm_out.num_channels:
                    size = dec.conv_norm_out.num_channels // dec.conv_norm_out.num_groups
                    _shortcut(shortcut, *_signed_groups(size, 3))
                else:
                    _shortcut(shortcut, {c: (c, 1.0) for c in range(3)})
        for up in block.upsamplers or []:
            _bilinear_x2(up.conv, up.conv.out_channels)
    _unnormalise(dec.conv_norm_out, dec.conv_out, 3, 1.0)
    for c in range(3):
        dec.time_conv_out.weight.data[c, c, 1, 0, 0] = 1.0
    vae.eval()


@torch.no_grad()
def init_unet_(unet, scale: float) -> None:
    """Start the UNet as output = scale * conditioning latents (x0-prediction): every frame the input."""
    zero_residual_branches_(unet)
    latent = unet.config.out_channels
    top = unet.config.block_out_channels[0]
    unet.conv_in.weight.data.zero_()
    unet.conv_in.bias.data.zero_()
    mapping, bias = _signed_groups(3, 3)
    for o, (i, w) in mapping.items():
        _center(unet.conv_in, o, latent + i, w * scale)  # the conditioning half of the input
    for o, b in bias.items():
        unet.conv_in.bias.data[o] = b
    for j in range(latent):  # the noisy latents, for the residual branches to use
        _center(unet.conv_in, 9 + j, j, 1.0)
    final = unet.up_blocks[-1]
    # The last level's first resnet takes [upsampled coarse path, skip]: keep the skip; the second
    # takes [first resnet's output, conv_in's output]: keep the first resnet's output.
    first = final.resnets[0].spatial_res_block.conv_shortcut
    _shortcut(first, {c: (c, 1.0) for c in range(top)}, offset=first.in_channels - top)
    _shortcut(final.resnets[1].spatial_res_block.conv_shortcut, {c: (c, 1.0) for c in range(top)})
    _unnormalise(unet.conv_norm_out, unet.conv_out, 3, 1.0)
