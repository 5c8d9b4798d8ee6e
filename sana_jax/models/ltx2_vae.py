"""The LTX-2 video VAE (diffusers ``AutoencoderKLLTX2Video``) in Flax Linen, channels-last.

encode: video (B, 1 + 8k, H, W, 3) in [-1, 1] -> patchify (4x4 pixels into channels) -> causal 3-D conv encoder
        -> posterior mean -> normalised latents (mean - latents_mean) / latents_std, (B, 1 + k, H/32, W/32, 128).
decode: latents -> z = latents * latents_std + latents_mean -> decoder (depth-to-space upsamplers) -> unpatchify,
        (B, 1 + 8(T - 1), 32h, 32w, 3), clamped to [-1, 1].

Every layer that mixes frames is a kernel-3 conv over time whose edges are padded by repeating the edge frame:
two copies of frame 0 in front when causal (the encoder), one copy of each end frame when not (the published
decoder). ``latents_mean`` / ``latents_std`` are the checkpoint's buffers, kept as two top-level params.

Streaming (``decode_chunk`` / ``decode_streaming``): runs of latent frames decoded in order, each layer carrying
its own state. Modes: "whole" (one clip: pad both ends), "stream" (a run inside a clip), "last" (the run that ends
it: pad the end). In "stream" a time conv with no state yet pads the front (its first frames are the clip's) and
then keeps its last two input frames; one that has received no frame yet passes nothing on. A non-causal conv
emits each frame one input frame late (it needs the next one), so early runs return fewer frames than they get,
nothing at all until a frame has crossed every layer, and the last run returns the held-back ones; residual
branches delay their skip path to match, and depth-to-space upsamplers drop the clip's leading frame at their
first output. Runs of any length (>= 1 frame, the last >= 0) concatenated equal the whole clip decoded at once.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import AutoencoderKLLTX2VideoConfig, ConfigError
from sana_jax.models._checks import check_latents, check_video
from sana_jax.nn.convs import conv3d

MODES = ("whole", "stream", "last")
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_supported(config: AutoencoderKLLTX2VideoConfig) -> None:
    """Stops on config values this port does not implement (none of them is in the published LTX-2 VAE)."""
    cfg = config
    if cfg.timestep_conditioning:
        raise ConfigError("AutoencoderKLLTX2Video: timestep_conditioning=True is not supported; expected False "
                          "(the published LTX-2 VAE decodes without a timestep)")
    if any(cfg.decoder_noise):
        raise ConfigError(f"AutoencoderKLLTX2Video: decoder_inject_noise={cfg.decoder_inject_noise!r} is not "
                          "supported; expected all False")
    for name in ("encoder_spatial_padding_mode", "decoder_spatial_padding_mode"):
        if getattr(cfg, name) not in _PAD_MODES:
            raise ConfigError(f"AutoencoderKLLTX2Video: {name}={getattr(cfg, name)!r}; expected one of "
                              f"{sorted(_PAD_MODES)}")
    n_enc = len(cfg.block_out_channels)
    for name, value in (("down_block_types", cfg.down_block_types), ("downsample_type", cfg.downsample_type),
                        ("spatio_temporal_scaling", cfg.encoder_scaling)):
        if len(value) < n_enc:
            raise ConfigError(f"AutoencoderKLLTX2Video: {name} has {len(value)} entries; expected at least "
                              f"len(block_out_channels) = {n_enc}")
    if len(cfg.layers_per_block) != n_enc + 1:
        raise ConfigError(f"AutoencoderKLLTX2Video: layers_per_block has {len(cfg.layers_per_block)} entries; "
                          f"expected len(block_out_channels) + 1 = {n_enc + 1}")
    bad = sorted(set(cfg.down_block_types[:n_enc]) - {"LTX2VideoDownBlock3D"})
    if bad:
        raise ConfigError(f"AutoencoderKLLTX2Video: down_block_types {bad} unknown; expected LTX2VideoDownBlock3D")
    bad = sorted(set(t for on, t in zip(cfg.encoder_scaling, cfg.downsample_type) if on)
                 - {"conv", "spatial", "temporal", "spatiotemporal"})
    if bad:
        raise ConfigError(f"AutoencoderKLLTX2Video: downsample_type {bad} unknown")
    n_dec = len(cfg.decoder_block_out_channels)
    if len(cfg.decoder_layers_per_block) != n_dec + 1:
        raise ConfigError(f"AutoencoderKLLTX2Video: decoder_layers_per_block has "
                          f"{len(cfg.decoder_layers_per_block)} entries; expected len(decoder_block_out_channels) "
                          f"+ 1 = {n_dec + 1}")
    for name, value in (("decoder_spatio_temporal_scaling", cfg.decoder_scaling), ("upsample_type", cfg.upsample_type),
                        ("upsample_residual", cfg.decoder_residual), ("upsample_factor", cfg.upsample_factor)):
        if len(value) < n_dec:
            raise ConfigError(f"AutoencoderKLLTX2Video: {name} has {len(value)} entries; expected at least "
                              f"len(decoder_block_out_channels) = {n_dec}")
    bad = sorted(set(t for on, t in zip(cfg.decoder_scaling[::-1], cfg.upsample_type) if on)
                 - {"spatial", "temporal", "spatiotemporal"})
    if bad:
        raise ConfigError(f"AutoencoderKLLTX2Video: upsample_type {bad} unknown")


def per_channel_rms_norm(x):
    """x / sqrt(mean(x^2 over channels) + 1e-8): diffusers ``PerChannelRMSNorm`` (no params). Statistics in fp32."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + 1e-8)
    return y.astype(x.dtype)


def _repeat_frame(x, index: int, count: int):
    return jnp.repeat(x[:, index:index + 1] if index >= 0 else x[:, index:][:, :1], count, axis=1)


def time_delay(x, state, mode: str, delay: int):
    """The identity on a stream, ``delay`` frames late (the skip path next to ``delay`` non-causal convs).

    Returns (frames, state): "whole" passes x through; "stream" emits what it holds and gets except the last
    ``delay`` frames, which it holds (fewer while the stream starts); "last" emits everything.
    """
    if delay == 0 or mode == "whole":
        return x, None
    seq = x if state is None else jnp.concatenate([state.astype(x.dtype), x], axis=1)
    if mode == "last":
        return seq, None
    if seq.shape[1] == 0:
        return seq, None
    keep = max(seq.shape[1] - delay, 0)
    return seq[:, :keep], seq[:, keep:]


class CausalConv3d(nn.Module):
    """diffusers ``LTX2VideoCausalConv3d``: kernel (kt, kh, kw) padded (kh // 2, kw // 2) in space by
    ``padding_mode`` and in time by repeating edge frames: kt - 1 copies of the first frame (causal), or
    (kt - 1) // 2 of the first and of the last (not causal). ``stride`` (t, h, w). x: (B, T, H, W, C_in).

    Streaming (module docstring): ``state`` is the last kt - 1 (time-padded) input frames of the runs before, None
    before the first frame. Returns (y, state for the next run). Params ``kernel`` (kt, kh, kw, C_in, C_out),
    ``bias``.
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride: tuple[int, int, int] = (1, 1, 1)
    causal: bool = True
    padding_mode: str = "zeros"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None, mode: str = "whole"):
        kt, kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kt, kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x = x.astype(self.dtype)
        new_state = None
        if kt > 1:
            left, right = (kt - 1, 0) if self.causal else ((kt - 1) // 2, (kt - 1) // 2)
            if state is None or mode == "whole":
                if x.shape[1] == 0:  # no frame has reached this conv yet
                    return self._empty(x), None
                x = jnp.concatenate([_repeat_frame(x, 0, left), x], axis=1)
            else:
                x = jnp.concatenate([state.astype(x.dtype), x], axis=1)
            if mode == "stream":
                new_state = x[:, x.shape[1] - (kt - 1):]
            elif right:
                x = jnp.concatenate([x, _repeat_frame(x, -1, right)], axis=1)
        ph, pw = kh // 2, kw // 2
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw), (0, 0)), mode=_PAD_MODES[self.padding_mode])
            if jax.default_backend() == "cpu":
                # XLA:CPU folds a pad into the conv and then runs a slow generic convolution: 78x slower for the
                # encoder's 2048-channel convs (6 s vs 77 ms each, benchmarks/ltx2_vae.py). The barrier keeps the
                # pad a separate op, so the conv stays a plain VALID one.
                x = jax.lax.optimization_barrier(x)
        if x.shape[1] < kt:  # nothing to convolve yet (a run with too few frames for this conv)
            spatial = tuple((n - k) // s + 1 for n, k, s in zip(x.shape[2:4], (kh, kw), self.stride[1:]))
            return jnp.zeros(x.shape[:1] + (0,) + spatial + (self.features,), self.dtype), new_state
        y = conv3d(x, kernel, self.stride)  # conv3d computes in x.dtype
        return y + bias.astype(self.dtype), new_state

    def _empty(self, x):
        """No output frames, shaped like the conv's output."""
        kh, kw = self.kernel_size[1:]
        spatial = tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(x.shape[2:4], (kh, kw), self.stride[1:]))
        return jnp.zeros(x.shape[:1] + (0,) + spatial + (self.features,), self.dtype)


def _delay_of(causal: bool) -> int:
    """Frames a kernel-3 time conv emits late in streaming."""
    return 0 if causal else 1


class ResnetBlock(nn.Module):
    """diffusers ``LTX2VideoResnetBlock3d``: RMS-norm -> SiLU -> conv -> RMS-norm -> SiLU -> conv, plus the input
    (LayerNorm + 1x1x1 conv when the channels change). x: (B, T, H, W, C_in) -> (B, T, H, W, out)."""

    out: int
    eps: float
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None, mode: str = "whole"):
        kw = dict(causal=self.causal, padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
        state = state or {}
        h, s1 = CausalConv3d(self.out, name="conv1", **kw)(nn.silu(per_channel_rms_norm(x)), state.get("conv1"), mode)
        h, s2 = CausalConv3d(self.out, name="conv2", **kw)(nn.silu(per_channel_rms_norm(h)), state.get("conv2"), mode)
        skip, s3 = time_delay(x, state.get("skip"), mode, 2 * _delay_of(self.causal))
        if x.shape[-1] != self.out:
            skip = nn.LayerNorm(self.eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm3")(skip)
            skip = nn.Dense(self.out, dtype=self.dtype, param_dtype=self.param_dtype, name="conv_shortcut")(skip)
        return h + skip.astype(h.dtype), {"conv1": s1, "conv2": s2, "skip": s3}


def space_to_depth(x, st: int, ss: int):
    """(B, T, H, W, C) -> (B, T/st, H/ss, W/ss, C*st*ss*ss), channel = ((c*st + t)*ss + h)*ss + w (diffusers)."""
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // st, st, h // ss, ss, w // ss, ss, c)
    return x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t // st, h // ss, w // ss, c * st * ss * ss)


def depth_to_space(x, st: int, ss: int):
    """Inverse of ``space_to_depth``: (B, T, H, W, C*st*ss*ss) -> (B, T*st, H*ss, W*ss, C)."""
    b, t, h, w, cc = x.shape
    c = cc // (st * ss * ss)
    x = x.reshape(b, t, h, w, c, st, ss, ss)
    return x.transpose(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * st, h * ss, w * ss, c)


class Downsampler(nn.Module):
    """diffusers ``LTX2VideoDownsampler3d`` (whole clip): the first st - 1 frames repeated in front, then a conv to
    out / (st ss ss) channels folded space-to-depth, plus the input folded the same way and averaged over groups
    of channels. x: (B, T, H, W, C) -> (B, (T + st - 1) / st, H / ss, W / ss, out)."""

    out: int
    stride: tuple[int, int]
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        st, ss = self.stride
        c = x.shape[-1]
        x = jnp.concatenate([x[:, :st - 1], x], axis=1)
        if x.shape[1] % st or x.shape[2] % ss or x.shape[3] % ss:
            raise ValueError(f"LTX-2 encoder: a downsampler by {self.stride} got frames/height/width "
                             f"{x.shape[1] - st + 1}/{x.shape[2]}/{x.shape[3]}")
        group = c * st * ss * ss // self.out
        residual = space_to_depth(x, st, ss)
        residual = residual.reshape(residual.shape[:-1] + (self.out, group)).mean(-1)
        y, _ = CausalConv3d(self.out // (st * ss * ss), causal=self.causal, padding_mode=self.padding_mode,
                            name="conv", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return space_to_depth(y, st, ss) + residual.astype(y.dtype)


class Upsampler(nn.Module):
    """diffusers ``LTX2VideoUpsampler3d``: conv to C st ss ss / factor channels, unfolded depth-to-space, the clip's
    first st - 1 frames dropped; with ``residual``, plus the input unfolded and its channels tiled.
    x: (B, T, H, W, C) -> (B, st T - (st - 1), ss H, ss W, C / factor) for a whole clip."""

    stride: tuple[int, int]
    residual: bool
    factor: int
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None, mode: str = "whole"):
        st, ss = self.stride
        c = x.shape[-1]
        state = state or {}
        y, s_conv = CausalConv3d(c * st * ss * ss // self.factor, causal=self.causal, padding_mode=self.padding_mode,
                                 name="conv", dtype=self.dtype, param_dtype=self.param_dtype)(
            x, state.get("conv"), mode)
        # The clip's leading st - 1 frames go at this layer's first output (a marker in the state records it).
        started = mode != "whole" and "started" in state
        drop = 0 if started or y.shape[1] == 0 else st - 1
        y = depth_to_space(y, st, ss)[:, drop:]
        new = {"conv": s_conv}
        if mode == "stream" and (started or y.shape[1] > 0):
            new["started"] = jnp.zeros((0,), jnp.float32)
        if self.residual:
            skip, new["skip"] = time_delay(x, state.get("skip"), mode, _delay_of(self.causal))
            skip = depth_to_space(skip, st, ss)
            skip = jnp.tile(skip, (1, 1, 1, 1, st * ss * ss // self.factor))[:, drop:]
            y = y + skip.astype(y.dtype)
        return y, new


class DownBlock(nn.Module):
    """diffusers ``LTX2VideoDownBlock3D`` (whole clip): resnets at the input width, then the downsampler of
    ``kind`` ("conv": a stride-2 causal conv; "spatial" / "temporal" / "spatiotemporal": ``Downsampler`` to
    ``out`` channels; False: none)."""

    out: int
    num_layers: int
    kind: str | bool
    stride: tuple[int, int]
    eps: float
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(causal=self.causal, padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
        x = _resnets(self, x, {}, {}, "whole", self.num_layers, x.shape[-1])
        if self.kind == "conv":
            x, _ = CausalConv3d(x.shape[-1], stride=(2, 2, 2), name="downsamplers_0", **kw)(x)
        elif self.kind:
            x = Downsampler(self.out, self.stride, name="downsamplers_0", **kw)(x)
        return x


class MidBlock(nn.Module):
    """diffusers ``LTX2VideoMidBlock3d``: ``num_layers`` resnets at constant width; streams like the decoder."""

    num_layers: int
    eps: float
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None, mode: str = "whole"):
        new = {}
        x = _resnets(self, x, state or {}, new, mode, self.num_layers, x.shape[-1])
        return x, new


def _resnets(block, x, state, new, mode, count, width):
    """``count`` resnets ``resnets_{j}`` of ``width`` inside ``block``'s compact call; their states go into ``new``."""
    kw = dict(causal=block.causal, padding_mode=block.padding_mode, dtype=block.dtype, param_dtype=block.param_dtype)
    for j in range(count):
        name = f"resnets_{j}"
        x, new[name] = ResnetBlock(width, block.eps, name=name, **kw)(x, state.get(name), mode)
    return x


class UpBlock(nn.Module):
    """diffusers ``LTX2VideoUpBlock3d``: an optional resnet ``conv_in`` to ``out`` channels (diffusers builds it when
    its nominal in/out widths differ), the upsampler (none for stride (1, 1)), then resnets at ``out``."""

    out: int
    has_conv_in: bool
    num_layers: int
    stride: tuple[int, int]
    residual: bool
    factor: int
    eps: float
    causal: bool
    padding_mode: str
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, state=None, mode: str = "whole"):
        kw = dict(causal=self.causal, padding_mode=self.padding_mode, dtype=self.dtype, param_dtype=self.param_dtype)
        state = state or {}
        new = {}
        if self.has_conv_in:
            x, new["conv_in"] = ResnetBlock(self.out, self.eps, name="conv_in", **kw)(x, state.get("conv_in"), mode)
        if tuple(self.stride) != (1, 1):
            x, new["upsamplers_0"] = Upsampler(self.stride, self.residual, self.factor, name="upsamplers_0", **kw)(
                x, state.get("upsamplers_0"), mode)
        return _resnets(self, x, state, new, mode, self.num_layers, self.out), new


class Encoder(nn.Module):
    """diffusers ``LTX2VideoEncoder3d`` (whole clip): video (B, F, H, W, C) -> (B, F', H', W', latent + 1) before the
    posterior split (channels [:latent] are the mean)."""

    config: AutoencoderKLLTX2VideoConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(causal=cfg.encoder_causal, padding_mode=cfg.encoder_spatial_padding_mode, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        p, pt = cfg.patch_size, cfg.patch_size_t
        b, f, h, w, c = x.shape
        # Patchify with diffusers' channel order (c, t, pw, ph): note width before height.
        x = x.reshape(b, f // pt, pt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 7, 2, 6, 4)
        x = x.reshape(b, f // pt, h // p, w // p, c * pt * p * p)
        x, _ = CausalConv3d(cfg.latent_channels, name="conv_in", **kw)(x)
        for i, out in enumerate(cfg.block_out_channels):
            x = DownBlock(out, cfg.layers_per_block[i], cfg.encoder_scaling[i] and cfg.downsample_type[i],
                          cfg.encoder_strides[i], cfg.resnet_norm_eps, name=f"down_blocks_{i}", **kw)(x)
        x, _ = MidBlock(cfg.layers_per_block[-1], cfg.resnet_norm_eps, name="mid_block", **kw)(x)
        x, _ = CausalConv3d(cfg.latent_channels + 1, name="conv_out", **kw)(nn.silu(per_channel_rms_norm(x)))
        return x


class Decoder(nn.Module):
    """diffusers ``LTX2VideoDecoder3d``: z (B, T, h, w, latent) -> (B, F, 32h, 32w, C_out), not clamped.

    ``state``: per-layer streaming state from the runs before (None: none yet); returns (video, state).
    """

    config: AutoencoderKLLTX2VideoConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, state=None, mode: str = "whole"):
        cfg = self.config
        kw = dict(causal=cfg.decoder_causal, padding_mode=cfg.decoder_spatial_padding_mode, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        state = state or {}
        new = {}
        channels = cfg.decoder_block_out_channels[::-1]
        layers = cfg.decoder_layers_per_block[::-1]
        residual = cfg.decoder_residual[::-1]
        factors = cfg.upsample_factor[::-1]
        x, new["conv_in"] = CausalConv3d(channels[0], name="conv_in", **kw)(z, state.get("conv_in"), mode)
        x, new["mid_block"] = MidBlock(layers[0], cfg.resnet_norm_eps, name="mid_block", **kw)(
            x, state.get("mid_block"), mode)
        out = channels[0]
        for i, block in enumerate(channels):
            nominal_in, out = out // factors[i], block // factors[i]
            name = f"up_blocks_{i}"
            x, new[name] = UpBlock(out, nominal_in != out, layers[i + 1], cfg.decoder_strides[i], residual[i],
                                   factors[i], cfg.resnet_norm_eps, name=name, **kw)(x, state.get(name), mode)
        p, pt = cfg.patch_size, cfg.patch_size_t
        x, new["conv_out"] = CausalConv3d(cfg.out_channels * pt * p * p, name="conv_out", **kw)(
            nn.silu(per_channel_rms_norm(x)), state.get("conv_out"), mode)
        b, t, h, w, _ = x.shape
        # Unpatchify: channel (c, t, pw, ph) back to pixels.
        x = x.reshape(b, t, h, w, cfg.out_channels, pt, p, p).transpose(0, 1, 5, 2, 7, 3, 6, 4)
        return x.reshape(b, t * pt, h * p, w * p, cfg.out_channels), new


class AutoencoderKLLTX2Video(nn.Module):
    """LTX-2 video VAE. Video channels-last (B, F, H, W, 3) in [-1, 1]; latents (B, F', H', W', latent_channels)
    normalised with the ``latents_mean`` / ``latents_std`` buffers (params here)."""

    config: AutoencoderKLLTX2VideoConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    HOLDS_FRAMES = True  # non-causal in time: a stream's runs lag, and its last run (mode "last") flushes them

    def setup(self):  # the config was checked once, when the component was built (``check_supported``)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = self.config.latent_channels
        self.encoder = Encoder(self.config, **kw)
        self.decoder = Decoder(self.config, **kw)
        self.latents_mean = self.param("latents_mean", nn.initializers.zeros, (c,), jnp.float32)
        self.latents_std = self.param("latents_std", nn.initializers.ones, (c,), jnp.float32)

    @property
    def spatial_ratio(self) -> int:
        """Video pixels per latent pixel: the config's explicit ratio when set, else its architecture's (32)."""
        return self.config.spatial_ratio

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame after the first (8)."""
        return self.config.temporal_ratio

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def __call__(self, video):
        """decode(encode(video)); ``init`` through this creates every param."""
        return self.decode(self.encode(video))

    def encode(self, video):
        """video (B, F, H, W, C_in), F = 1 + 8k, H and W multiples of 32 -> normalised posterior-mean latents."""
        self._check_video(video)
        mean = self.encoder(video)[..., :self.config.latent_channels].astype(jnp.float32)
        return (mean - self.latents_mean.astype(jnp.float32)) / self.latents_std.astype(jnp.float32)

    def decode(self, latents):
        """Normalised latents (B, T, h, w, latent) -> video (B, 1 + 8(T - 1), 32h, 32w, C_out) in [-1, 1]."""
        video, _ = self.decode_chunk(latents, None, "whole", clamp=True)
        return video

    def init_stream_state(self):
        """The state before a clip's first run: None (every layer pads the clip's front at its first frame)."""
        return None

    def decode_chunk(self, latents, state=None, mode: str = "whole", clamp: bool = False):
        """Decodes one run of latent frames in ``mode`` ("whole", "stream", "last"; module docstring) after the runs
        whose state is ``state`` (None: the clip starts with this run). Returns (video frames, state for the next
        run). The number of frames a run returns is static: it depends only on the shapes. Not clamped unless
        ``clamp=True``, as diffusers' LTX-2 decode (``decode`` clamps)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        self._check_latents(latents, allow_empty=mode == "last")
        z = latents.astype(jnp.float32) * self.latents_std.astype(jnp.float32) + self.latents_mean.astype(jnp.float32)
        video, state = self.decoder(z.astype(self.dtype), state, mode)
        return (jnp.clip(video, -1.0, 1.0) if clamp else video), state

    def decode_streaming(self, latents, chunk_size: int = 1, clamp: bool = True):
        """``decode`` with memory bounded by one run: runs of ``chunk_size`` latent frames, the first ones unrolled
        while frames are still making their way through the layers (the state's shapes still change), the rest
        under ``lax.scan`` carrying every layer's state, then a last run with the remainder that flushes what the
        non-causal layers held back."""
        self._check_latents(latents)
        if chunk_size < 1:
            raise ValueError(f"decode_streaming: chunk_size={chunk_size}; expected >= 1")
        b, t = latents.shape[:2]
        n, rest = divmod(t, chunk_size)
        rate = int(np.prod([st for st, _ in self.config.decoder_strides]))   # video frames per latent frame
        pieces, state, done, i = [], None, 0, 0
        signature = lambda tree: jax.tree_util.tree_map(lambda a: a.shape, tree)  # noqa: E731
        while i < n:  # warm-up: until a run leaves the state's structure and shapes as it found them
            chunk, new = self.decode_chunk(latents[:, i * chunk_size:(i + 1) * chunk_size], state, "stream", clamp)
            pieces.append(chunk)
            done += chunk.shape[1]
            i += 1
            steady = state is not None and signature(new) == signature(state)
            state = new
            if steady:
                break
        total = 1 + rate * (t - 1)
        h, w = latents.shape[2] * self.config.spatial_ratio, latents.shape[3] * self.config.spatial_ratio
        video = jnp.zeros((b, total, h, w, self.config.out_channels), self.dtype)
        if pieces:
            video = jax.lax.dynamic_update_slice_in_dim(video, jnp.concatenate(pieces, axis=1).astype(video.dtype),
                                                        0, axis=1)
        if i < n:
            runs = latents[:, i * chunk_size:n * chunk_size].reshape((b, n - i, chunk_size) + latents.shape[2:])
            per_run = rate * chunk_size
            start = done

            def step(module, carry, run):
                state, video, index = carry
                chunk, state = module.decode_chunk(run, state, "stream", clamp)
                video = jax.lax.dynamic_update_slice_in_dim(video, chunk.astype(video.dtype), start + index * per_run,
                                                            axis=1)
                return (state, video, index + 1), None

            scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
            (state, video, _), _ = scan(self, (state, video, jnp.int32(0)), runs.swapaxes(0, 1))
            done += (n - i) * per_run
        tail, _ = self.decode_chunk(latents[:, t - rest:], state, "last", clamp)
        return jax.lax.dynamic_update_slice_in_dim(video, tail.astype(video.dtype), done, axis=1)

    # Input checks (shapes are static, so these run at trace time).
    def _check_video(self, video):
        cfg = self.config
        check_video(video, cfg.in_channels, cfg.temporal_ratio, cfg.spatial_ratio)

    def _check_latents(self, latents, allow_empty: bool = False):
        check_latents(latents, self.config.latent_channels, allow_empty)
