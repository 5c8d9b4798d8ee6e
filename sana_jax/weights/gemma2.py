"""Rulebook for the Gemma2 text encoder: transformers ``Gemma2Model`` state dict <-> Flax params.

A folder saved from ``Gemma2ForCausalLM`` (or ``AutoModelForCausalLM``) holds the same tensors under ``model.``;
``from_causal_lm`` strips that prefix before the rulebook reads the keys. Its ``lm_head.weight`` is normally
absent (tied to the embedding, transformers does not store it); when present it is dropped only if it is
bit-for-bit the embedding, since ``Gemma2Model`` has no LM head and an untied head would be lost silently.
Written folders are bare ``Gemma2Model``s: no prefix, no head.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from sana_jax.config import Gemma2Config
from sana_jax.models.gemma2 import NORMS
from sana_jax.weights.rulebook import Rule, WeightMappingError, linear

LAYERS = "layers"
CAUSAL_LM_PREFIX = "model."
LM_HEAD = "lm_head.weight"


def transformers_rules(config: Gemma2Config) -> list[Rule]:
    """transformers ``Gemma2Model`` state dict <-> unscanned Flax params (per-layer keys ``layers_{L}/...``)."""
    t = f"{LAYERS}.{{L}}"
    f = f"{LAYERS}_{{L}}"
    return [
        Rule("embed_tokens.weight", "embed_tokens"),
        *[r for n in "qkvo" for r in linear(f"{t}.self_attn.{n}_proj", f"{f}/self_attn/{n}_proj",
                                              bias=config.attention_bias)],
        *[r for n in ("gate", "up", "down") for r in linear(f"{t}.mlp.{n}_proj", f"{f}/mlp/{n}_proj", bias=False)],
        *[Rule(f"{t}.{n}.weight", f"{f}/{n}/scale") for n in NORMS],
        Rule("norm.weight", "norm/scale"),
    ]


def from_causal_lm(state: Mapping[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
    """A stored state dict -> ``Gemma2Model`` keys: strips ``model.``, drops a tied ``lm_head.weight``."""
    state = dict(state)
    head = state.pop(LM_HEAD, None)
    if any(k.startswith(CAUSAL_LM_PREFIX) for k in state):
        bare = sorted(k for k in state if not k.startswith(CAUSAL_LM_PREFIX))
        if bare:
            raise WeightMappingError(f"{source}: keys with and without the '{CAUSAL_LM_PREFIX}' prefix are mixed; "
                                     f"unprefixed: {bare[:10]}")
        state = {k[len(CAUSAL_LM_PREFIX):]: v for k, v in state.items()}
    if head is not None:
        embed = state.get("embed_tokens.weight")
        if embed is None or not _bit_equal(head, embed):
            raise WeightMappingError(
                f"{source}: {LM_HEAD} is not a copy of embed_tokens.weight (an untied LM head); Gemma2Model has "
                "no LM head, so it would be dropped. Remove it from the checkpoint if that is intended.")
    return state


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))
