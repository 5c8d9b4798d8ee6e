"""The SANA-Video Linear DiT (diffusers ``SanaVideoTransformer3DModel``) in Flax Linen.

latents (B, F, H, W, C) --patchify--> tokens on a (F', H', W') grid, kept as (B, F', H', W', D) so the FFN's
spatial and temporal convs see their axes; timesteps -> AdaLN-single modulation; caption -> projection + RMSNorm;
L blocks of [linear self-attention, softmax cross-attention, GLUMBConv FFN with temporal conv]; modulated final
norm -> projection -> unpatchify -> velocity (B, F, H, W, C_out).

Per-frame timesteps (B, F') embed only the F' distinct values and broadcast them over each frame's tokens: the
modulation is (B, F', 1, 1, 6D), never a per-token (B, N, 6D).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import SanaVideoTransformerConfig
from sana_jax.kernels import linear_attention
from sana_jax.kernels.linear_attention import resolve as resolve_attention
from sana_jax.kernels.linear_attention import pallas_kernel, sharded_linear_attention
from sana_jax.nn import RMSNorm, VideoRope, dense, layer_norm, temporal_conv
from sana_jax.nn.convs import glu_depthwise

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def timestep_sinusoid(t: jnp.ndarray, dim: int = 256) -> jnp.ndarray:
    """[cos, sin] sinusoid of t (...,) -> (..., dim), fp32 (diffusers `Timesteps`, flip_sin_to_cos, shift 0)."""
    half = dim // 2
    exponent = np.float32(-math.log(10000.0)) * np.arange(half, dtype=np.float32) / np.float32(half)
    freqs = np.exp(exponent).astype(np.float32)
    arg = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


class TimestepEmbedding(nn.Module):
    """sinusoid(256) -> Linear -> SiLU -> Linear. t: (...,) -> (..., D)."""

    dim: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, t):
        x = timestep_sinusoid(t).astype(self.dtype)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = dense(self.dim, (None, "embed"), name="linear_1", **kw)(x)
        return dense(self.dim, ("mlp", "embed"), name="linear_2", **kw)(nn.silu(x))


class LinearSelfAttention(nn.Module):
    """q, k RMSNorm across heads -> ReLU -> RoPE (numerator only) linear attention. x: (B, F, H, W, D)."""

    heads: int
    head_dim: int
    use_bias: bool
    qk_norm: bool
    eps: float
    implementation: str
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, rope, block_sizes=None, state=None):
        """x: (B, F, H, W, D). Bidirectional by default; ``block_sizes`` (frames per block, static): block-causal
        over the whole sequence; ``state`` (S, z): one block continuing after the blocks summed into ``state``.
        Returns (out, state after this input) — the state is None unless ``state`` was given."""
        shape = x.shape
        inner = self.heads * self.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tokens = x.reshape(shape[0], -1, shape[-1])
        q = dense(inner, ("embed", "heads"), use_bias=self.use_bias, name="to_q", **kw)(tokens)
        k = dense(inner, ("embed", "heads"), use_bias=self.use_bias, name="to_k", **kw)(tokens)
        v = dense(inner, ("embed", "heads"), use_bias=self.use_bias, name="to_v", **kw)(tokens)
        if self.qk_norm:
            q = RMSNorm(1e-5, axis_name="heads", param_dtype=self.param_dtype, name="norm_q")(q)
            k = RMSNorm(1e-5, axis_name="heads", param_dtype=self.param_dtype, name="norm_k")(k)

        def split(a):  # (B, N, H*d) -> (B, N, H, d)
            return a.reshape(a.shape[0], a.shape[1], self.heads, self.head_dim)

        q, k, v = split(q), split(k), split(v)
        attend = _attention_op(self.implementation, self.eps,
                               block_causal=state is not None or (block_sizes is not None and len(block_sizes) > 1))
        if state is not None:
            out, state = attend(q, k, v, rope, initial_state=state, return_state=True)
        elif block_sizes is None or len(block_sizes) == 1:
            out = attend(q, k, v, rope)
        else:
            out = _block_causal(attend, q, k, v, rope, block_sizes, shape[2] * shape[3])
        out = dense(shape[-1], ("heads", "embed"), name="to_out", **kw)(out.reshape(*tokens.shape[:2], inner))
        return out.reshape(shape), state


def _attention_op(implementation: str, eps: float, block_causal: bool):
    """The linear-attention call ("auto" resolved once per layer call, by backend and by whether the call is
    block-causal or continues a state). A Pallas kernel is opaque to XLA's partitioner: under a device mesh it runs
    per device inside ``shard_map``, batch and heads split as the logical rules say and video frames split along
    the sequence axis (only the attention sums cross devices)."""
    mesh = jax.sharding.get_abstract_mesh()
    implementation = resolve_attention(implementation, block_causal)
    if implementation != "pallas" or mesh.empty or mesh.size == 1:
        return functools.partial(linear_attention, eps=eps, implementation=implementation)
    # The tokens (B, N, H, d) as the rules lay them out (N is frame-major, so it is split like the frames).
    batch, sequence, heads = (() if a is None else (a,) if isinstance(a, str) else tuple(a)
                              for a in nn.logical_to_mesh_axes(("batch", "frames", "heads")))
    if len(sequence) > 1:
        raise ValueError(f"logical axis 'frames' maps to mesh axes {sequence}; the Pallas linear attention takes one")
    return functools.partial(sharded_linear_attention, pallas_kernel(), mesh=mesh, batch_axes=batch,
                             head_axes=heads, sequence_axis=sequence[0] if sequence else None, eps=eps)


def _block_causal(attend, q, k, v, rope, block_sizes, tokens_per_frame):
    """Block-causal attention over blocks of ``block_sizes`` frames: the first block alone (it may be longer),
    then equal blocks in one scanned call, or block by block when they differ."""
    bounds = np.concatenate([[0], np.cumsum(block_sizes)]) * tokens_per_frame

    def part(lo, hi):
        return (q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], None if rope is None else (rope[0][lo:hi], rope[1][lo:hi]))

    out, state = attend(*part(bounds[0], bounds[1]), return_state=True)
    outs = [out]
    rest = block_sizes[1:]
    if len(set(rest)) == 1:
        outs.append(attend(*part(bounds[1], bounds[-1]), chunk_size=rest[0] * tokens_per_frame, initial_state=state))
    else:
        for lo, hi in zip(bounds[1:-1], bounds[2:]):
            out, state = attend(*part(lo, hi), initial_state=state, return_state=True)
            outs.append(out)
    return jnp.concatenate(outs, axis=1)


class CrossAttention(nn.Module):
    """Softmax attention from video tokens to caption tokens, q/k RMSNorm across heads, additive text-mask bias."""

    heads: int
    head_dim: int
    qk_norm: bool
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, context, bias):
        """x: (B, F, H, W, D); context: (B, L, D); bias: (B, L) additive."""
        shape = x.shape
        inner = self.heads * self.head_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tokens = x.reshape(shape[0], -1, shape[-1])
        q = dense(inner, ("embed", "heads"), name="to_q", **kw)(tokens)
        k = dense(inner, ("embed", "heads"), name="to_k", **kw)(context)
        v = dense(inner, ("embed", "heads"), name="to_v", **kw)(context)
        if self.qk_norm:
            q = RMSNorm(1e-5, axis_name="heads", param_dtype=self.param_dtype, name="norm_q")(q)
            k = RMSNorm(1e-5, axis_name="heads", param_dtype=self.param_dtype, name="norm_k")(k)

        def split(a):  # (B, N, H*d) -> (B, N, H, d)
            return a.reshape(a.shape[0], a.shape[1], self.heads, self.head_dim)

        out = jax.nn.dot_product_attention(split(q), split(k), split(v),
                                           bias=bias[:, None, None, :].astype(q.dtype))
        out = dense(shape[-1], ("heads", "embed"), name="to_out", **kw)(out.reshape(*tokens.shape[:2], inner))
        return out.reshape(shape)


class GLUMBTempConv(nn.Module):
    """Per frame: 1x1 -> SiLU -> depthwise 3x3 -> GLU -> 1x1; then y + temporal_conv(y) over frames.

    x: (B, F, H, W, D) -> (B, F, H, W, D), and the last frame of y (the next block's left context).
    Block-causal: ``block_sizes`` zeroes the right neighbour of each block's last frame; ``left`` (B, 1, H, W, D)
    is the left neighbour of frame 0 (the previous block's last frame; zeros when None).
    """

    hidden: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, block_sizes=None, left=None):
        b, f, h, w, d = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = dense(2 * self.hidden, ("embed", "mlp"), name="conv_inverted", **kw)(x)
        kernel = self.param("conv_depth_kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=()), (None, None, "mlp")),
            (3, 3, 2 * self.hidden), self.param_dtype)
        bias = self.param("conv_depth_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                          (2 * self.hidden,), self.param_dtype)
        y = glu_depthwise(y, kernel.astype(y.dtype), bias.astype(y.dtype))
        y = dense(d, ("mlp", "embed"), use_bias=False, name="conv_point", **kw)(y)
        temp = self.param("conv_temp_kernel", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, "embed")), (3, d, d), self.param_dtype)
        return y + temporal_conv(y, temp, left=left, block_sizes=block_sizes), y[:, -1:]


class SanaVideoBlock(nn.Module):
    """One block. x: (B, F, H, W, D); mod: (B, T, 1, 1, 6D) with T in {1, F}.

    Returns (x, cache) for nn.scan. ``cache`` (this layer's {"S", "z", "left"}) given: the input is one block after
    the cached ones, and the returned cache includes it. ``block_sizes``: block-causal over the whole input.
    """

    config: SanaVideoTransformerConfig
    eps: float
    implementation: str
    dtype: Any
    param_dtype: Any

    block_sizes: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x, context, bias, mod, rope, cache=None):
        cfg = self.config
        d = cfg.inner_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        table = self.param("scale_shift_table", nn.with_logical_partitioning(
            nn.initializers.normal(d ** -0.5), (None, "embed")), (6, d), self.param_dtype)
        mod = mod.reshape(*mod.shape[:-1], 6, d) + table.astype(mod.dtype)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (mod[..., i, :] for i in range(6))

        n = (layer_norm(x, cfg.norm_eps) * (1 + scale_msa) + shift_msa).astype(x.dtype)
        attn, state = LinearSelfAttention(cfg.num_attention_heads, cfg.attention_head_dim, cfg.attention_bias,
                                          cfg.qk_norm is not None, self.eps, self.implementation, name="attn1",
                                          **kw)(n, rope, self.block_sizes,
                                                None if cache is None else (cache["S"], cache["z"]))
        x = x + (gate_msa * attn).astype(x.dtype)
        x = x + CrossAttention(cfg.cross_heads, cfg.cross_head_dim, cfg.qk_norm is not None, name="attn2",
                               **kw)(x, context, bias)
        n = (layer_norm(x, cfg.norm_eps) * (1 + scale_mlp) + shift_mlp).astype(x.dtype)
        ff, last = GLUMBTempConv(cfg.ffn_hidden, name="ff", **kw)(n, self.block_sizes,
                                                                  None if cache is None else cache["left"])
        x = x + (gate_mlp * ff).astype(x.dtype)
        x = nn.with_logical_constraint(x, ("batch", "frames", "height", "width", "embed"))
        if cache is None:
            return x, None
        return x, {"S": state[0], "z": state[1], "left": last.astype(cache["left"].dtype)}


class SanaVideoTransformer(nn.Module):
    """The Linear DiT. Options that are not architecture (dtype, scanning, remat, numerics) are attributes here;
    the architecture is ``config`` alone.

    Attributes:
      dtype: compute dtype. Linear-attention sums and norms' statistics are fp32 regardless.
      scan_layers: run the blocks under ``nn.scan`` (params stacked with a leading ``layers`` axis).
      remat_policy: one of ``REMAT_POLICIES``.
      original_numerics: reproduce NVlabs' numbers instead of diffusers' (integer-floored timesteps, eps 1e-8).
      attention_implementation: passed to ``sana_jax.kernels.linear_attention``.
    """

    config: SanaVideoTransformerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat_policy: str = "none"
    original_numerics: bool = False
    attention_implementation: str = "auto"

    @nn.compact
    def __call__(self, latents, timestep, encoder_hidden_states, encoder_attention_mask=None, guidance=None, *,
                 block_sizes=None, cache=None, frame_offset=0):
        """Velocity for ``latents``.

        latents: (B, F, H, W, C_in); timestep: scalar, (B,), or per latent frame (B, F // p_t);
        encoder_hidden_states: (B, L, caption_channels); encoder_attention_mask: (B, L) of 1 = keep, 0 = pad;
        guidance: (B,), required iff the config has guidance_embeds. Returns (B, F, H, W, C_out) in ``dtype``.

        Block-causal video (attention bidirectional inside a block of latent frames, causal across blocks):
          block_sizes: static tuple of token frames per block, summing to F' — the whole sequence at once
            (training; per-block timesteps go in ``timestep`` per frame).
          cache: the constant-size state of the blocks before this input (``init_cache``); the input is the next
            block, RoPE time positions start at ``frame_offset``, and the call returns (velocity, cache including
            this block).
        """
        cfg = self.config
        d = cfg.inner_dim
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, grid, t_emb_in = self._check_inputs(latents, timestep, encoder_hidden_states, encoder_attention_mask,
                                               guidance)
        ft, ht, wt = grid
        pt, ph, pw = cfg.patch

        # 1. Patch embedding (Conv3d with kernel = stride = patch, as a patchify and one matmul).
        patches = latents.astype(self.dtype).reshape(b, ft, pt, ht, ph, wt, pw, cfg.in_channels)
        patches = patches.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, ft, ht, wt, -1)
        kernel = self.param("patch_embedding_kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4), (None, None, None, None, "embed")),
            (pt, ph, pw, cfg.in_channels, d), self.param_dtype)
        pbias = self.param("patch_embedding_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                           (d,), self.param_dtype)
        x = patches @ kernel.reshape(-1, d).astype(self.dtype) + pbias.astype(self.dtype)
        x = nn.with_logical_constraint(x, ("batch", "frames", "height", "width", "embed"))

        # 2. Timestep (and guidance) embedding: (B, T, D) with T = 1 or F'.
        if self.original_numerics:
            t_emb_in = jnp.floor(t_emb_in)
        if cfg.guidance_embeds:
            emb = TimestepEmbedding(d, name="timestep_embedder", **kw)(t_emb_in)
            g = jnp.broadcast_to(jnp.asarray(guidance, jnp.float32), (b,)).reshape(b, 1)
            emb = emb + TimestepEmbedding(d, name="guidance_embedder", **kw)(g)
        else:
            emb = TimestepEmbedding(d, name="timestep_embedder", **kw)(t_emb_in)
        mod = dense(6 * d, ("embed", "mlp"), name="time_linear", **kw)(nn.silu(emb))
        mod = mod[:, :, None, None, :]  # (B, T, 1, 1, 6D): broadcast over the frame's tokens

        # 3. Caption projection and norm; the text mask becomes an additive bias of -1e4 on padding.
        c = dense(d, (None, "embed"), name="caption_linear_1", **kw)(encoder_hidden_states.astype(self.dtype))
        c = nn.gelu(c, approximate=True)
        c = dense(d, ("mlp", "embed"), name="caption_linear_2", **kw)(c)
        c = RMSNorm(1e-5, param_dtype=self.param_dtype, name="caption_norm")(c)
        if encoder_attention_mask is None:
            bias = jnp.zeros(c.shape[:2], self.dtype)
        else:
            bias = (1 - encoder_attention_mask.astype(self.dtype)) * -10000.0

        # 4. Blocks.
        if block_sizes is not None:
            block_sizes = tuple(int(n) for n in block_sizes)
            if cache is not None:
                raise ValueError("block_sizes and cache are two forms of block-causal attention; give one")
            if sum(block_sizes) != ft or min(block_sizes) < 1:
                raise ValueError(f"block_sizes {block_sizes} must be positive and sum to the {ft} token frames")
        rope = VideoRope(cfg.attention_head_dim, cfg.rope_max_seq_len)(grid, frame_offset)
        eps = 1e-8 if self.original_numerics else 1e-15
        block_kw = dict(config=cfg, eps=eps, implementation=self.attention_implementation, block_sizes=block_sizes,
                        **kw)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r}; expected one of {sorted(REMAT_POLICIES)}")
        block_cls = SanaVideoBlock
        if self.remat_policy != "none":
            block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[self.remat_policy],
                                 prevent_cse=not self.scan_layers)
        if self.scan_layers:
            blocks = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                             in_axes=(nn.broadcast,) * 4 + (0,), length=cfg.num_layers,
                             metadata_params={nn.PARTITION_NAME: "layers"})
            x, new_cache = blocks(name="transformer_blocks", **block_kw)(x, c, bias, mod, rope, cache)
        else:
            layer_caches = []
            for i in range(cfg.num_layers):
                layer = None if cache is None else jax.tree_util.tree_map(lambda a: a[i], cache)
                x, layer = block_cls(name=f"transformer_blocks_{i}", **block_kw)(x, c, bias, mod, rope, layer)
                layer_caches.append(layer)
            new_cache = None if cache is None else jax.tree_util.tree_map(lambda *a: jnp.stack(a), *layer_caches)

        # 5. Modulated final norm (shift, scale from the raw embedding), projection, unpatchify.
        table = self.param("scale_shift_table", nn.with_logical_partitioning(
            nn.initializers.normal(d ** -0.5), (None, "embed")), (2, d), self.param_dtype)
        final = emb[:, :, None, None, None, :] + table.astype(emb.dtype)  # (B, T, 1, 1, 2, D)
        x = layer_norm(x, 1e-6) * (1 + final[..., 1, :]) + final[..., 0, :]
        x = dense(pt * ph * pw * cfg.output_channels, ("embed", None), name="proj_out", **kw)(x.astype(self.dtype))
        x = x.reshape(b, ft, ht, wt, pt, ph, pw, cfg.output_channels)
        x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, ft * pt, ht * ph, wt * pw, cfg.output_channels)
        return x if cache is None else (x, new_cache)

    def _check_inputs(self, latents, timestep, context, mask, guidance):
        cfg = self.config
        if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
            raise ValueError(f"latents must be (B, F, H, W, {cfg.in_channels}) channels-last; got {latents.shape}")
        b, f, h, w, _ = latents.shape
        pt, ph, pw = cfg.patch
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latents (F, H, W) = {(f, h, w)} must be divisible by patch_size {cfg.patch}")
        grid = (f // pt, h // ph, w // pw)
        timestep = jnp.asarray(timestep)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (b,))
        if timestep.shape == (b,):
            t = timestep.reshape(b, 1)
        elif timestep.shape == (b, grid[0]):
            t = timestep
        else:
            raise ValueError(f"timestep must be a scalar, (B,) = {(b,)} or per latent frame (B, F') = "
                             f"{(b, grid[0])}; got {timestep.shape}")
        if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.caption_channels:
            raise ValueError(f"encoder_hidden_states must be (B, L, {cfg.caption_channels}) with B = {b}; "
                             f"got {context.shape}")
        if mask is not None and mask.shape != context.shape[:2]:
            raise ValueError(f"encoder_attention_mask must be (B, L) = {context.shape[:2]}; got {mask.shape}")
        if cfg.guidance_embeds and guidance is None:
            raise ValueError("guidance is required: the config has guidance_embeds=True")
        if not cfg.guidance_embeds and guidance is not None:
            raise ValueError("guidance was given but the config has guidance_embeds=False")
        if guidance is not None and jnp.shape(guidance) not in ((b,), ()):
            raise ValueError(f"guidance must be a scalar or (B,) = {(b,)}; got {jnp.shape(guidance)}")
        return b, grid, t


def init_cache(config: SanaVideoTransformerConfig, batch: int, token_height: int, token_width: int,
               dtype=jnp.float32) -> dict:
    """The zero state before the first block: per layer (stacked on a leading L axis)
    S (L, B, H, d, d) and z (L, B, H, d) in fp32, and the FFN's left frame (L, B, 1, h', w', D) in ``dtype``.
    Its size depends on the token grid's height and width only, never on how many blocks have been seen."""
    heads, d, n = config.num_attention_heads, config.attention_head_dim, config.num_layers
    return {"S": jnp.zeros((n, batch, heads, d, d), jnp.float32), "z": jnp.zeros((n, batch, heads, d), jnp.float32),
            "left": jnp.zeros((n, batch, 1, token_height, token_width, config.inner_dim), dtype)}
