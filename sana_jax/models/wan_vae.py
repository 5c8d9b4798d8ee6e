"""The Wan2.1 causal video VAE (diffusers ``AutoencoderKLWan``) in Flax Linen, channels-last.

encode: video (B, 1 + 4k, H, W, 3) in [-1, 1] --encoder--> (mu, logvar) --quant conv--> mu
        -> normalised latents (mu - latents_mean) / latents_std, (B, 1 + k, H/8, W/8, z_dim).
decode: latents -> z = latents * std + mean --post-quant conv--> decoder -> clamp to [-1, 1] -> (B, 1 + 4(T-1), ...).

Both run over the whole clip at once (no Python loop over frames): every causal conv is an ordinary conv with two
zero frames in front, which is what diffusers' frame-by-frame cached loop computes. ``decode_chunk`` decodes a
run of latent frames given the causal caches of the run before it, so ``decode_streaming`` decodes a clip of any
length under ``lax.scan`` with the peak memory of one chunk. The decoder is causal: a run's frames are final when
it is decoded, so the streaming modes "stream" and "last" are the same here (the LTX-2 VAE's are not).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import AutoencoderKLWanConfig, ConfigError
from sana_jax.models._checks import check_latents, check_video
from sana_jax.models.wan_vae_layers import CausalConv3d, Downsample, MidBlock, ResidualBlock, Upsample, WanRMSNorm

MODES = ("whole", "stream", "last")  # decode_chunk: one clip / a run inside a clip / the run that ends it


def check_supported(config: AutoencoderKLWanConfig) -> None:
    """Stops on the config keys this port does not implement (the Wan2.2 residual VAE, patchified input)."""
    if config.is_residual:
        raise ConfigError("AutoencoderKLWan: is_residual=True (the Wan2.2 residual VAE) is not supported; "
                          "expected False (Wan2.1)")
    if config.patch_size is not None:
        raise ConfigError(f"AutoencoderKLWan: patch_size={config.patch_size} is not supported; expected null")
    if len(config.temperal_downsample) != len(config.dim_mult) - 1:
        raise ConfigError(f"AutoencoderKLWan: temperal_downsample has {len(config.temperal_downsample)} entries; "
                          f"expected len(dim_mult) - 1 = {len(config.dim_mult) - 1}")
    if config.attn_scales:
        # diffusers builds attention layers into the encoder for these but its encoder cannot run them (it passes
        # feat_cache to WanAttentionBlock: TypeError), so no published or testable model uses them.
        raise ConfigError(f"AutoencoderKLWan: attn_scales={list(config.attn_scales)} is not supported; expected []")
    if config.dropout != 0.0:
        raise ConfigError(f"AutoencoderKLWan: dropout={config.dropout} is not supported; expected 0.0")


def encoder_layers(config: AutoencoderKLWanConfig) -> list[tuple[str, int]]:
    """The encoder's flat ``down_blocks`` list as (kind, channels out): "res", "down2d", "down3d"."""
    dims = [config.base_dim * m for m in (1, *config.dim_mult)]
    layers = []
    for i, out_dim in enumerate(dims[1:]):
        layers += [("res", out_dim)] * config.num_res_blocks
        if i != len(config.dim_mult) - 1:
            layers.append(("down3d" if config.temperal_downsample[i] else "down2d", out_dim))
    return layers


class WanEncoder(nn.Module):
    """video (B, T, H, W, C_in) -> (mean, logvar) stacked on channels (B, T', H/8, W/8, 2 z_dim)."""

    config: AutoencoderKLWanConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, _ = CausalConv3d(cfg.base_dim * 1, name="conv_in", **kw)(x)
        for i, (kind, dim) in enumerate(encoder_layers(cfg)):
            name = f"down_blocks_{i}"
            if kind == "res":
                x, _ = ResidualBlock(dim, name=name, **kw)(x)
            else:
                x = Downsample(kind == "down3d", name=name, **kw)(x)
        x, _ = MidBlock(name="mid_block", **kw)(x)
        x = nn.silu(WanRMSNorm(self.param_dtype, name="norm_out")(x))
        x, _ = CausalConv3d(2 * cfg.z_dim, name="conv_out", **kw)(x)
        return x


class UpBlock(nn.Module):
    """``num_resnets`` residual blocks then an optional "2d" / "3d" upsampler. x: (B, T, H, W, C)."""

    out_dim: int
    num_resnets: int
    upsample: str | None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None, first=True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        new = {}
        for j in range(self.num_resnets):
            x, new[f"resnets_{j}"] = ResidualBlock(self.out_dim, name=f"resnets_{j}", **kw)(
                x, cache.get(f"resnets_{j}"))
        if self.upsample is not None:
            x, new["upsampler"] = Upsample(self.upsample == "3d", name="upsampler", **kw)(
                x, cache.get("upsampler"), first)
        return x, new


class WanDecoder(nn.Module):
    """z (B, T, h, w, z_dim) after the post-quant conv -> video (B, T', 8h, 8w, C_out), not clamped.

    ``cache`` holds every causal conv's last two input frames from the previous chunk (None: start of a clip);
    ``first``: this chunk starts the clip. Returns (video, new cache).
    """

    config: AutoencoderKLWanConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cache=None, first=True):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cache = cache or {}
        new = {}
        base = cfg.decoder_base_dim or cfg.base_dim
        dims = [base * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        temperal_upsample = cfg.temperal_downsample[::-1]
        x, new["conv_in"] = CausalConv3d(dims[0], name="conv_in", **kw)(x, cache.get("conv_in"))
        x, new["mid_block"] = MidBlock(name="mid_block", **kw)(x, cache.get("mid_block"))
        for i, out_dim in enumerate(dims[1:]):
            upsample = None if i == len(cfg.dim_mult) - 1 else ("3d" if temperal_upsample[i] else "2d")
            name = f"up_blocks_{i}"
            x, new[name] = UpBlock(out_dim, cfg.num_res_blocks + 1, upsample, name=name, **kw)(
                x, cache.get(name), first)
        x = nn.silu(WanRMSNorm(self.param_dtype, name="norm_out")(x))
        x, new["conv_out"] = CausalConv3d(cfg.out_channels, name="conv_out", **kw)(x, cache.get("conv_out"))
        return x, new


class AutoencoderKLWan(nn.Module):
    """Wan2.1 video VAE. Video channels-last (B, F, H, W, 3) in [-1, 1]; latents (B, F', H', W', z_dim), normalised
    with the config's ``latents_mean`` / ``latents_std``."""

    config: AutoencoderKLWanConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    HOLDS_FRAMES = False  # causal: a decode run's frames are final, a stream's last run needs no flush

    def setup(self):  # the config was checked once, when the component was built (``check_supported``)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = self.config.z_dim
        self.encoder = WanEncoder(self.config, **kw)
        self.quant_conv = CausalConv3d(2 * z, (1, 1, 1), **kw)
        self.post_quant_conv = CausalConv3d(z, (1, 1, 1), **kw)
        self.decoder = WanDecoder(self.config, **kw)

    def _stats(self):
        mean = jnp.asarray(np.asarray(self.config.latents_mean, np.float32))
        std = jnp.asarray(np.asarray(self.config.latents_std, np.float32))
        return mean, std

    @property
    def spatial_ratio(self) -> int:
        """Video pixels per latent pixel (8)."""
        return self.config.spatial_compression_ratio

    @property
    def temporal_ratio(self) -> int:
        """Video frames per latent frame after the first (4)."""
        return self.config.temporal_compression_ratio

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    def __call__(self, video):
        """decode(encode(video)); ``init`` through this creates every param."""
        return self.decode(self.encode(video))

    def encode(self, video):
        """video (B, F, H, W, C_in), F = 1 + 4k, H and W multiples of 8 -> normalised posterior mean latents."""
        self._check_video(video)
        h, _ = self.quant_conv(self.encoder(video))
        mu = h[..., :self.config.z_dim].astype(jnp.float32)
        mean, std = self._stats()
        return (mu - mean) / std

    def decode(self, latents):
        """Normalised latents (B, T, h, w, z_dim) -> video (B, 1 + 4(T-1), 8h, 8w, C_out) in [-1, 1]."""
        video, _ = self.decode_chunk(latents, None, "whole")
        return video

    def init_stream_state(self):
        """The state before a clip's first run: None (that run starts the clip; its frame 0 decodes to one frame)."""
        return None

    def decode_chunk(self, latents, state=None, mode: str = "whole", clamp: bool = True):
        """Decodes a run of latent frames after the run whose causal caches are ``state`` (None: the run starts the
        clip, so its frame 0 is the clip's frame 0, decoded to one frame). ``mode`` (static): "whole" (the run is
        the clip; ``state`` is ignored), "stream" or "last" (a run of a clip; the same, the decoder being causal).

        Returns (video chunk, clamped to [-1, 1] as diffusers' decode unless ``clamp=False``; caches for the next
        run). Runs decoded in order and concatenated equal the whole clip decoded at once.
        """
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        cache = None if mode == "whole" else state
        first = cache is None
        self._check_latents(latents)
        mean, std = self._stats()
        z = (latents.astype(jnp.float32) * std + mean).astype(self.dtype)
        z, _ = self.post_quant_conv(z)
        video, cache = self.decoder(z, cache, first)
        return (jnp.clip(video, -1.0, 1.0) if clamp else video), cache

    def init_cache(self, latents):
        """Zero caches for decoding runs shaped like ``latents`` (B, T, h, w, z_dim), the structure a run after the
        first carries; only the shape is read. A clip's first run takes None."""
        _, cache = self.decode_chunk(jnp.zeros(latents.shape[:1] + (1,) + latents.shape[2:], latents.dtype))
        return jax.tree_util.tree_map(jnp.zeros_like, cache)

    def decode_streaming(self, latents, chunk_size: int = 1, clamp: bool = True):
        """``decode`` with constant memory: frame 0 alone, then runs of ``chunk_size`` latent frames under
        ``lax.scan`` carrying the causal caches. (T - 1) must be a multiple of chunk_size."""
        self._check_latents(latents)
        b, t = latents.shape[:2]
        if chunk_size < 1 or (t - 1) % chunk_size:
            raise ValueError(f"decode_streaming: latent frames - 1 = {t - 1} must be a multiple of chunk_size "
                             f"(got chunk_size={chunk_size})")
        head, cache = self.decode_chunk(latents[:, :1], None, "stream", clamp)
        if t == 1:
            return head
        n = (t - 1) // chunk_size
        runs = latents[:, 1:].reshape((b, n, chunk_size) + latents.shape[2:]).swapaxes(0, 1)
        per_run = self.config.temporal_compression_ratio * chunk_size  # video frames per run after the first frame
        # The output video rides in the carry and each run is written into it in place, so nothing but the
        # output itself grows with the clip length.
        video = jnp.zeros((b, 1 + n * per_run) + head.shape[2:], head.dtype)
        video = jax.lax.dynamic_update_slice_in_dim(video, head, 0, axis=1)

        def step(module, carry, run):
            cache, video, index = carry
            chunk, cache = module.decode_chunk(run, cache, "stream", clamp)
            video = jax.lax.dynamic_update_slice_in_dim(video, chunk, 1 + index * per_run, axis=1)
            return (cache, video, index + 1), None

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        (_, video, _), _ = scan(self, (cache, video, jnp.int32(0)), runs)
        return video

    # Input checks (shapes are static, so these run at trace time).
    def _check_video(self, video):
        cfg = self.config
        check_video(video, cfg.in_channels, cfg.temporal_compression_ratio, cfg.spatial_compression_ratio)

    def _check_latents(self, latents):
        check_latents(latents, self.config.z_dim)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode_tile(module: AutoencoderKLWan, params, latents, chunk_size: int | None):
    if chunk_size is None:
        return module.apply({"params": params}, latents, None, "whole", False, method="decode_chunk")[0]
    return module.apply({"params": params}, latents, chunk_size, False, method="decode_streaming")


def _blend(previous, tile, extent: int, axis: int):
    """Cross-fades the first ``extent`` rows (axis 2) or columns (axis 3) of ``tile`` from ``previous``'s last ones,
    linearly, as diffusers' ``blend_v`` / ``blend_h``."""
    extent = min(previous.shape[axis], tile.shape[axis], extent)
    if extent == 0:
        return tile
    shape = [1] * tile.ndim
    shape[axis] = extent
    weight = jnp.asarray((np.arange(extent) / extent).astype(np.float32)).reshape(shape)
    head = jax.lax.slice_in_dim(previous, previous.shape[axis] - extent, None, axis=axis) * (1 - weight)
    head = head + jax.lax.slice_in_dim(tile, 0, extent, axis=axis) * weight
    return jnp.concatenate([head, jax.lax.slice_in_dim(tile, extent, None, axis=axis)], axis=axis)


def decode_tiled(model, latents, *, tile_sample_min: tuple[int, int] = (256, 256),
                 tile_sample_stride: tuple[int, int] = (192, 192), chunk_size: int | None = None):
    """Spatially tiled decode, as diffusers' ``AutoencoderKLWan.enable_tiling()`` + ``decode``: overlapping latent
    tiles decoded one by one, each blended linearly into its upper and left neighbours over the overlap, then
    clamped. ``model``: a loaded ``AutoencoderKLWan`` Component; latents (B, T, h, w, z_dim) normalised.

    Tile sizes are in video pixels (multiples of 8). A clip that fits in one tile is decoded whole. With
    ``chunk_size``, each tile is decoded by ``decode_streaming`` (memory bounded in time and space).
    Each distinct tile shape compiles once (at most four: inner, right, bottom, corner).
    """
    module = model.module
    sf = module.config.spatial_compression_ratio
    (min_h, min_w), (stride_h, stride_w) = tile_sample_min, tile_sample_stride
    for name, value in (("tile_sample_min", min_h), ("tile_sample_min", min_w), ("tile_sample_stride", stride_h),
                        ("tile_sample_stride", stride_w)):
        if value <= 0 or value % sf:
            raise ValueError(f"decode_tiled: {name} = {tile_sample_min if 'min' in name else tile_sample_stride}; "
                             f"expected positive multiples of {sf}")
    if stride_h > min_h or stride_w > min_w:
        raise ValueError(f"decode_tiled: tile_sample_stride {tile_sample_stride} must not exceed tile_sample_min "
                         f"{tile_sample_min} (tiles must overlap or touch)")
    latents = jnp.asarray(latents)
    _, _, h, w, _ = latents.shape
    if h <= min_h // sf and w <= min_w // sf:
        return jnp.clip(_decode_tile(module, model.params, latents, chunk_size), -1.0, 1.0)
    rows = []
    for i in range(0, h, stride_h // sf):
        rows.append([_decode_tile(module, model.params, latents[:, :, i:i + min_h // sf, j:j + min_w // sf],
                                  chunk_size) for j in range(0, w, stride_w // sf)])
    # In raster order, each tile is blended with its already-blended upper and left neighbours.
    for i, row in enumerate(rows):
        for j in range(len(row)):
            if i > 0:
                row[j] = _blend(rows[i - 1][j], row[j], min_h - stride_h, axis=2)
            if j > 0:
                row[j] = _blend(row[j - 1], row[j], min_w - stride_w, axis=3)
    video = jnp.concatenate([jnp.concatenate([t[:, :, :stride_h, :stride_w] for t in row], axis=3)
                             for row in rows], axis=2)
    return jnp.clip(video[:, :, :h * sf, :w * sf], -1.0, 1.0)
