"""SANA's deep-compression autoencoder (diffusers ``AutoencoderDC``) in Flax Linen, channels-last.

images (B, H, W, C) --encoder--> latents (B, H/f, W/f, c) with f = 2^(blocks - 1); the decoder mirrors it.
Each stage is a stack of ResBlocks (conv, act, conv, RMSNorm) or EfficientViT blocks (multi-scale ReLU linear
attention, then a GLU inverted-bottleneck conv), joined by 2x down/up blocks whose parameter-free shortcuts
(pixel-unshuffle + channel averaging, channel repeat + pixel-shuffle) make every stage learn a residual.

DC-AE has no temporal axis: video (B, F, H, W, C) is folded into the batch and coded frame by frame.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sana_jax.config import AutoencoderDCConfig, ConfigError
from sana_jax.models.dc_ae_layers import ACTIVATIONS, DownBlock, UpBlock, _block, _conv
from sana_jax.nn import RMSNorm

BLOCK_TYPES = ("ResBlock", "EfficientViTBlock")
NORM_TYPES = ("rms_norm",)  # diffusers also has batch_norm / layer_norm; no SANA checkpoint uses them
DOWNSAMPLE_TYPES = ("pixel_unshuffle", "conv", "Conv")  # diffusers: anything but pixel_unshuffle is a strided conv
UPSAMPLE_TYPES = ("pixel_shuffle", "interpolate")
MODES = ("whole", "stream", "last")  # decode_chunk modes of the VAE interface (all alike here)


def check_config(cfg: AutoencoderDCConfig) -> None:
    """Stops on option values this port does not implement, or shapes diffusers cannot build, naming the key."""
    n = len(cfg.encoder_block_out_channels)
    if n < 1 or len(cfg.decoder_block_out_channels) != n:
        raise ConfigError(f"decoder_block_out_channels {cfg.decoder_block_out_channels} must have as many entries as "
                          f"encoder_block_out_channels {cfg.encoder_block_out_channels} (at least one)")

    def per_block(key, values, allowed=None):
        if len(values) != n:
            raise ConfigError(f"{key} has {len(values)} entries {values}; expected one per block ({n})")
        for v in values if allowed is not None else ():
            if v not in allowed:
                raise ConfigError(f"{key}: {v!r} is not supported; expected one of {list(allowed)}")

    per_block("encoder_block_types", cfg.encoder_block_type_list, BLOCK_TYPES)
    per_block("decoder_block_types", cfg.decoder_block_type_list, BLOCK_TYPES)
    per_block("decoder_norm_types", cfg.decoder_norm_type_list, NORM_TYPES)
    per_block("decoder_act_fns", cfg.decoder_act_fn_list, ACTIVATIONS)
    for side in ("encoder", "decoder"):
        layers = getattr(cfg, f"{side}_layers_per_block")
        per_block(f"{side}_layers_per_block", layers)
        per_block(f"{side}_qkv_multiscales", getattr(cfg, f"{side}_qkv_multiscales"))
        if any(x < 0 for x in layers) or any(x == 0 for x in layers[1:]):
            raise ConfigError(f"{side}_layers_per_block {layers}: only the first block may have 0 layers")
        for ks in getattr(cfg, f"{side}_qkv_multiscales"):
            if any(k < 1 or k % 2 == 0 for k in ks):
                raise ConfigError(f"{side}_qkv_multiscales {ks}: kernel sizes must be odd and positive")
        widths = getattr(cfg, f"{side}_block_out_channels")
        types = getattr(cfg, f"{side}_block_type_list")
        for width, kind, count in zip(widths, types, layers):
            if kind == "EfficientViTBlock" and count and width // cfg.attention_head_dim < 1:
                raise ConfigError(f"{side}_block_out_channels: width {width} < attention_head_dim "
                                  f"{cfg.attention_head_dim} leaves an EfficientViT block with no head")
    if cfg.downsample_block_type not in DOWNSAMPLE_TYPES:
        raise ConfigError(f"downsample_block_type {cfg.downsample_block_type!r} is not supported; expected one of "
                          f"{list(DOWNSAMPLE_TYPES)}")
    if cfg.upsample_block_type not in UPSAMPLE_TYPES:
        raise ConfigError(f"upsample_block_type {cfg.upsample_block_type!r} is not supported; expected one of "
                          f"{list(UPSAMPLE_TYPES)}")
    if cfg.decoder_conv_act_fn not in ACTIVATIONS:
        raise ConfigError(f"decoder_conv_act_fn {cfg.decoder_conv_act_fn!r} is not supported; expected one of "
                          f"{list(ACTIVATIONS)}")
    enc, dec = cfg.encoder_block_out_channels, cfg.decoder_block_out_channels
    for i in range(n - 1):  # the shortcuts average / repeat whole channel groups
        if (4 * enc[i]) % enc[i + 1] or (cfg.downsample_block_type == "pixel_unshuffle" and enc[i + 1] % 4):
            raise ConfigError(f"encoder_block_out_channels {enc}: {enc[i]} -> {enc[i + 1]} is not a valid 2x "
                              f"downsampling (4*in must be a multiple of out, and out of 4 for pixel_unshuffle)")
        if (4 * dec[i]) % dec[i + 1]:
            raise ConfigError(f"decoder_block_out_channels {dec}: {dec[i + 1]} -> {dec[i]} is not a valid 2x "
                              f"upsampling (4*out must be a multiple of in)")
    if cfg.encoder_out_shortcut and enc[-1] % cfg.latent_channels:
        raise ConfigError(f"encoder_out_shortcut needs encoder_block_out_channels[-1] = {enc[-1]} to be a multiple "
                          f"of latent_channels = {cfg.latent_channels}")
    if cfg.decoder_in_shortcut and dec[-1] % cfg.latent_channels:
        raise ConfigError(f"decoder_in_shortcut needs decoder_block_out_channels[-1] = {dec[-1]} to be a multiple "
                          f"of latent_channels = {cfg.latent_channels}")
    if cfg.encoder_layers_per_block[0] == 0 and cfg.downsample_block_type == "pixel_unshuffle" and n > 1 \
            and enc[1] % 4:
        raise ConfigError(f"encoder_block_out_channels[1] = {enc[1]} must be a multiple of 4 for a pixel_unshuffle "
                          f"conv_in")


# ---------------------------------------------------------------------------------------------------------------
# Encoder, decoder, autoencoder.


class DCEncoder(nn.Module):
    """images (B, H, W, in_channels) -> raw latents (B, H/f, W/f, latent_channels)."""

    config: AutoencoderDCConfig
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths, layers = cfg.encoder_block_out_channels, cfg.encoder_layers_per_block
        pixel = cfg.downsample_block_type == "pixel_unshuffle"
        if layers[0] > 0:
            x = _conv(widths[0], name="conv_in", **kw)(x)
        else:  # the first stage is only a downsampling into the second's width
            x = DownBlock(widths[1], pixel, shortcut=False, name="conv_in", **kw)(x)
        for i, (kind, count) in enumerate(zip(cfg.encoder_block_type_list, layers)):
            for j in range(count):
                x = _block(kind, head_dim=cfg.attention_head_dim, kernel_sizes=cfg.encoder_qkv_multiscales[i],
                           act_fn="silu", name=f"down_blocks_{i}_{j}", **kw)(x)
            if i < len(widths) - 1 and count > 0:
                x = DownBlock(widths[i + 1], pixel, shortcut=True, name=f"down_blocks_{i}_{count}", **kw)(x)
        y = _conv(cfg.latent_channels, name="conv_out", **kw)(x)
        if cfg.encoder_out_shortcut:
            y = y + x.reshape(*x.shape[:-1], cfg.latent_channels, -1).mean(axis=-1)
        return y


class DCDecoder(nn.Module):
    """raw latents (B, h, w, latent_channels) -> images (B, h*f, w*f, in_channels)."""

    config: AutoencoderDCConfig
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, z):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths, layers = cfg.decoder_block_out_channels, cfg.decoder_layers_per_block
        interpolate = cfg.upsample_block_type == "interpolate"
        x = _conv(widths[-1], name="conv_in", **kw)(z)
        if cfg.decoder_in_shortcut:
            x = x + jnp.repeat(z, widths[-1] // cfg.latent_channels, axis=-1)
        for i in reversed(range(len(widths))):
            j = 0
            if i < len(widths) - 1 and layers[i] > 0:
                x = UpBlock(widths[i], interpolate, shortcut=True, name=f"up_blocks_{i}_0", **kw)(x)
                j = 1
            for _ in range(layers[i]):
                x = _block(cfg.decoder_block_type_list[i], head_dim=cfg.attention_head_dim,
                           kernel_sizes=cfg.decoder_qkv_multiscales[i], act_fn=cfg.decoder_act_fn_list[i],
                           name=f"up_blocks_{i}_{j}", **kw)(x)
                j += 1
        x = RMSNorm(1e-5, use_bias=True, param_dtype=self.param_dtype, name="norm_out")(x)
        x = ACTIVATIONS[cfg.decoder_conv_act_fn](x)
        if layers[0] > 0:
            return _conv(cfg.in_channels, name="conv_out", **kw)(x)
        return UpBlock(cfg.in_channels, interpolate, shortcut=False, name="conv_out", **kw)(x)


class DCAutoencoder(nn.Module):
    """The DC-AE. ``encode``: images in [-1, 1] -> latents * scaling_factor; ``decode`` undoes both.

    Images (B, H, W, C) or video (B, F, H, W, C), channels-last; H and W multiples of the spatial compression
    ratio f. ``__call__`` = decode(encode(x)), so ``init`` creates every param.
    """

    config: AutoencoderDCConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    HOLDS_FRAMES = False  # frames are coded one by one: nothing is held back between decode runs

    def setup(self):  # the config was checked once, when the component was built (``check_config``)
        self.encoder = DCEncoder(self.config, dtype=self.dtype, param_dtype=self.param_dtype)
        self.decoder = DCDecoder(self.config, dtype=self.dtype, param_dtype=self.param_dtype)

    @property
    def spatial_ratio(self) -> int:
        return self.config.spatial_compression_ratio

    @property
    def temporal_ratio(self) -> int:
        """1: frames are coded one by one."""
        return self.config.temporal_compression_ratio

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode(self, images: jnp.ndarray) -> jnp.ndarray:
        """images (B, H, W, C) or (B, F, H, W, C) -> normalised latents (B, [F,] H/f, W/f, latent_channels)."""
        cfg = self.config
        frames = self._check(images, "images", cfg.in_channels)
        f = cfg.spatial_compression_ratio
        h, w = images.shape[-3:-1]
        if h % f or w % f:
            raise ValueError(f"images: height and width must be multiples of {f} (the spatial compression ratio); "
                             f"got {h} x {w}")
        x = images.reshape(-1, *images.shape[-3:]).astype(self.dtype)
        z = self.encoder(x) * jnp.asarray(cfg.scaling_factor, self.dtype)
        return z.reshape(*frames, *z.shape[1:])

    def decode(self, latents: jnp.ndarray) -> jnp.ndarray:
        """normalised latents (B, [F,] h, w, latent_channels) -> images (B, [F,] h*f, w*f, C), about [-1, 1]."""
        cfg = self.config
        frames = self._check(latents, "latents", cfg.latent_channels)
        z = latents.reshape(-1, *latents.shape[-3:]).astype(self.dtype) / jnp.asarray(cfg.scaling_factor, self.dtype)
        x = self.decoder(z)
        return x.reshape(*frames, *x.shape[1:])

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.decode(self.encode(x))

    def init_stream_state(self):
        """No temporal state: None, before and after every run."""
        return None

    def decode_chunk(self, latents, state=None, mode: str = "whole"):
        """The streaming decode of the VAE interface: frames are decoded one by one, so a run of latent frames
        (B, F, h, w, latent_channels) is ``decode`` of it in every ``mode`` ("whole", "stream", "last"); returns
        (video (B, F, h*f, w*f, C), None)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        del state
        return self.decode(latents), None

    @staticmethod
    def _check(x, name: str, channels: int) -> tuple[int, ...]:
        """The leading (B,) or (B, F) axes of a channels-last image or video array."""
        if x.ndim not in (4, 5) or x.shape[-1] != channels:
            raise ValueError(f"{name} must be channels-last (B, H, W, {channels}) images or (B, F, H, W, {channels}) "
                             f"video; got shape {tuple(x.shape)}")
        if 0 in x.shape:
            raise ValueError(f"{name} has an empty axis: shape {tuple(x.shape)}")
        return tuple(x.shape[:-3])
