"""The Gemma2 decoder without LM head (transformers ``Gemma2Model``), SANA-Video's text encoder, in Flax Linen.

input_ids (B, L) -> embedding * sqrt(D) -> L layers of [h = x + post_attn_norm(attn(input_norm(x))),
out = h + post_ff_norm(mlp(pre_ff_norm(h)))] -> final norm -> last hidden state (B, L, D).

Attention is grouped-query softmax attention with rotate-half RoPE at positions 0..L-1 (padding does not shift
them), scores scaled by query_pre_attn_scalar^-1/2 and tanh soft-capped, then masked causally, by the padding
mask on the keys, and on sliding layers to the last ``sliding_window`` positions (kv > q - window). Masked scores
get finfo.min added, as transformers' eager attention does, so a query row with no visible key (a padded position
more than a window past the last token, on a sliding layer) averages over all keys exactly as transformers does.
The softmax runs in fp32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sana_jax.config import Gemma2Config
from sana_jax.nn import GemmaRMSNorm, apply_rotate_half_rope, dense, rotate_half_rope_table

NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")


def mask_bias(valid: jnp.ndarray, sliding, window: int | None, dtype) -> jnp.ndarray:
    """Additive mask (B, 1, 1, L, L): 0 where query q may see key k, finfo(dtype).min elsewhere.

    valid: (B, L) bool, the padding mask on keys; sliding: bool (Python or traced) for this layer's type.
    Visible: k <= q, valid[k], and on sliding layers k > q - window.
    """
    length = valid.shape[1]
    q = jnp.arange(length)[:, None]
    k = jnp.arange(length)[None, :]
    visible = k <= q
    if window is not None:
        visible = visible & (jnp.logical_not(sliding) | (k > q - window))
    visible = visible[None] & valid[:, None, :]
    return jnp.where(visible, 0, jnp.finfo(dtype).min).astype(dtype)[:, None, None]


class Gemma2Attention(nn.Module):
    """Grouped-query attention with soft-capped logits. x: (B, L, D) -> (B, L, D)."""

    config: Gemma2Config
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, rope, bias):
        cfg = self.config
        b, length, _ = x.shape
        kv, hd = cfg.num_key_value_heads, cfg.head_dim
        groups = cfg.num_attention_heads // kv
        kw = dict(use_bias=cfg.attention_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        # Query head h reads key/value head h // groups (transformers' repeat_kv order).
        q = dense(cfg.num_attention_heads * hd, ("embed", "heads"), name="q_proj", **kw)(x)
        k = dense(kv * hd, ("embed", "heads"), name="k_proj", **kw)(x)
        v = dense(kv * hd, ("embed", "heads"), name="v_proj", **kw)(x)
        q = apply_rotate_half_rope(q.reshape(b, length, kv, groups, hd), *rope)
        k = apply_rotate_half_rope(k.reshape(b, length, kv, hd), *rope)
        v = v.reshape(b, length, kv, hd)

        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k) * (cfg.query_pre_attn_scalar ** -0.5)
        if cfg.attn_logit_softcapping is not None:
            cap = cfg.attn_logit_softcapping
            scores = jnp.tanh(scores / cap) * cap
        probs = jax.nn.softmax((scores + bias).astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, length, cfg.num_attention_heads * hd)
        return dense(cfg.hidden_size, ("heads", "embed"), name="o_proj", **kw)(out)


class Gemma2MLP(nn.Module):
    """down(gelu_tanh(gate(x)) * up(x)). x: (B, L, D) -> (B, L, D)."""

    config: Gemma2Config
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = dense(cfg.intermediate_size, ("embed", "mlp"), name="gate_proj", **kw)(x)
        up = dense(cfg.intermediate_size, ("embed", "mlp"), name="up_proj", **kw)(x)
        return dense(cfg.hidden_size, ("mlp", "embed"), name="down_proj", **kw)(nn.gelu(gate, approximate=True) * up)


class Gemma2DecoderLayer(nn.Module):
    """Sandwich-normed attention and MLP. x: (B, L, D); returns (x, None) for nn.scan.

    sliding: this layer's type (Python bool unrolled, a traced bool when scanned over the layer axis).
    """

    config: Gemma2Config
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x, rope, valid, sliding):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = {n: GemmaRMSNorm(cfg.rms_norm_eps, param_dtype=self.param_dtype, name=n) for n in NORMS}
        bias = mask_bias(valid, sliding, cfg.sliding_window, self.dtype)
        h = Gemma2Attention(cfg, name="self_attn", **kw)(norm["input_layernorm"](x), rope, bias)
        x = x + norm["post_attention_layernorm"](h)
        h = Gemma2MLP(cfg, name="mlp", **kw)(norm["pre_feedforward_layernorm"](x))
        x = x + norm["post_feedforward_layernorm"](h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class Gemma2Model(nn.Module):
    """transformers ``Gemma2Model``: ``module(input_ids (B, L), attention_mask (B, L) or None) -> (B, L, D)``.

    Attributes:
      dtype: compute dtype (norms and the softmax run in fp32 regardless, as in transformers).
      scan_layers: run the layers under ``nn.scan`` (params stacked with a leading ``layers`` axis); the layer
        type is scanned over as a per-layer flag, so sliding and full layers share one body.
    """

    config: Gemma2Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None):
        """input_ids: (B, L) integer tokens; attention_mask: (B, L), 1 = token, 0 = padding (None: no padding).

        Returns the last hidden state (B, L, hidden_size) in ``dtype``, after the final norm.
        """
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        input_ids, valid = self._check_inputs(input_ids, attention_mask)

        table = self.param("embed_tokens", nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("vocab", "embed")), (cfg.vocab_size, cfg.hidden_size), self.param_dtype)
        # The normaliser sqrt(D) is rounded to fp32, then to the compute dtype, as transformers does.
        scale = jnp.asarray(np.float32(math.sqrt(cfg.hidden_size)), self.dtype)
        x = jnp.take(table, input_ids, axis=0).astype(self.dtype) * scale
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        rope = rotate_half_rope_table(input_ids.shape[1], cfg.head_dim, cfg.rope_theta)
        sliding = [t == "sliding_attention" for t in cfg.layer_type_list]
        if self.scan_layers:
            layers = nn.scan(Gemma2DecoderLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                             in_axes=(nn.broadcast, nn.broadcast, 0), length=cfg.num_hidden_layers,
                             metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = layers(cfg, name="layers", **kw)(x, rope, valid, jnp.asarray(sliding))
        else:
            for i, slides in enumerate(sliding):
                x, _ = Gemma2DecoderLayer(cfg, name=f"layers_{i}", **kw)(x, rope, valid, slides)
        return GemmaRMSNorm(cfg.rms_norm_eps, param_dtype=self.param_dtype, name="norm")(x)

    @staticmethod
    def _check_inputs(input_ids, attention_mask):
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be (B, L) integers; got shape {input_ids.shape}, dtype {input_ids.dtype}")
        if attention_mask is None:
            return input_ids, jnp.ones(input_ids.shape, bool)
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must be (B, L) = {input_ids.shape} like input_ids; "
                             f"got {attention_mask.shape}")
        return input_ids, attention_mask != 0
