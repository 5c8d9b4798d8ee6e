"""What is trained: a model, how its params start, the loss of one batch, and the batch's logical axes.

``DiTTask``: the Linear DiT on (normalised latents, text embeddings) with the flow-matching objective — text-to-video,
image-to-video (a clean first frame, unscored) and block-causal diffusion forcing.
``AutoencoderTask``: a DC-AE on pixel video, reconstruction loss.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sana_jax.components import REGISTRY, load_component
from sana_jax.config import AutoencoderDCConfig, AutoencoderKLWanConfig, SanaVideoTransformerConfig
from sana_jax.pipeline.stream import block_sizes as stream_block_sizes
from sana_jax.training import objective as fm
from sana_jax.training.config import (AutoencoderModelConfig, AutoencoderObjectiveConfig, DiTModelConfig,
                                      FlowMatchingConfig, read_training_config)
from sana_jax.training.state import make_optimizer
from sana_jax.weights import rulebook
from sana_jax.weights import transformer as transformer_weights


def _component_config(model_cfg: DiTModelConfig | AutoencoderModelConfig, config_cls):
    """The architecture: ``model.init_from`` (a component folder: its config.json and its weights) or
    ``model.architecture`` (a dict of diffusers config.json keys)."""
    if model_cfg.init_from:
        component = load_component(model_cfg.init_from)
        if not isinstance(component.config, config_cls):
            raise ValueError(f"model.init_from={model_cfg.init_from!r} holds a {component.class_name}; this task "
                             f"trains a {config_cls.__name__}")
        return component.config, component
    return config_cls.from_dict(dict(model_cfg.architecture), source="model.architecture"), None


@dataclasses.dataclass
class DiTTask:
    """Flow matching for the Linear DiT. ``batch``: latents (B, F, H, W, C) normalised, text_embeds (B, L, D),
    text_mask (B, L). ``null_text``: the empty-caption conditioning (L, D), (L,) used for caption dropout."""

    config: SanaVideoTransformerConfig
    module: nn.Module
    objective: FlowMatchingConfig
    null_text: tuple[np.ndarray, np.ndarray]
    pretrained: dict | None = None
    optim: object = None

    batch_axes = {"latents": ("batch", "frames", None, None, None), "text_embeds": ("batch", None, None),
                  "text_mask": ("batch", None)}

    @classmethod
    def from_config(cls, config, null_text):
        """``config``: a ``TrainingConfig`` of task "dit"."""
        arch, module, pretrained = build_dit(config.model, config.model.init_from)
        return cls(arch, module, config.objective, null_text, pretrained, config.optim)

    def example_batch(self, batch: int, latent_shape, text_length: int) -> dict:
        f, h, w, c = latent_shape
        return {"latents": jax.ShapeDtypeStruct((batch, f, h, w, c), jnp.float32),
                "text_embeds": jax.ShapeDtypeStruct((batch, text_length, self.config.caption_channels), jnp.float32),
                "text_mask": jax.ShapeDtypeStruct((batch, text_length), jnp.int32)}

    def minimal_batch(self) -> dict:
        """The smallest batch the model accepts (params do not depend on the batch's size)."""
        pt, ph, pw = self.config.patch
        return self.example_batch(1, (pt, ph, pw, self.config.in_channels), 1)

    def init(self, rng, batch: dict) -> dict:
        """Params (boxed with their logical axis names), or the pretrained ones (boxed with the same names)."""
        return init_dit(self.module, self.pretrained, rng, batch["latents"].shape[1:], batch["text_embeds"].shape[1:])

    def optimizer(self):
        return make_optimizer(self.optim)

    def trained_model(self, params):
        """The params of the model a run exports (and keeps an EMA of)."""
        return params

    def block_sizes(self, latent_frames: int) -> tuple[int, ...] | None:
        k = int(self.objective.block_frames)
        return None if k <= 0 else stream_block_sizes(latent_frames // self.config.patch[0], k)

    def model_inputs(self, batch, rng) -> dict:
        """The noised batch: x_t, timestep ((B,) or per token frame (B, F')), text embeds/mask after caption
        dropout, the velocity target and the loss weight (B, F, 1, 1, 1). rng draws the noise, the timesteps,
        caption dropout and the image-to-video choice."""
        obj = self.objective
        x0 = batch["latents"].astype(jnp.float32)
        b, f = x0.shape[:2]
        pt = self.config.patch[0]
        k_t, k_noise, k_drop, k_i2v = jax.random.split(rng, 4)
        sigmas, timestep_map = (jnp.asarray(a) for a in fm.flow_sigmas(obj.flow_shift))
        mean, std = obj.logit_mean, obj.logit_std

        blocks = self.block_sizes(f)
        if blocks is None:
            idx = jnp.broadcast_to(fm.logit_normal_indices(k_t, (b, 1), mean, std), (b, f // pt))
        else:
            probs = dict(obj.block_modes)
            idx = jnp.repeat(fm.block_indices(k_t, b, len(blocks), probs, mean=mean, std=std),
                             np.asarray(blocks), axis=1, total_repeat_length=f // pt)
        i2v = jax.random.bernoulli(k_i2v, obj.i2v_prob, (b,))
        pinned = i2v[:, None] & (jnp.arange(f // pt) == 0)[None]          # (B, F'): a clean first frame
        idx = jnp.where(pinned, 0, idx)
        scored = ~pinned
        if blocks is not None:  # a clean block (index 0: teacher forcing) is context, not a target
            scored = scored & (idx > 0)

        frame_idx = jnp.repeat(idx, pt, axis=1)                            # (B, F) per latent frame
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t, target = fm.noised(x0, noise, sigmas[frame_idx][:, :, None, None, None])
        timestep = timestep_map[idx]
        if blocks is None and obj.i2v_prob == 0:
            timestep = timestep[:, 0]

        embeds, mask = batch["text_embeds"], batch["text_mask"]
        drop = jax.random.bernoulli(k_drop, obj.caption_dropout, (b,))
        null_embeds, null_mask = (jnp.asarray(a) for a in self.null_text)
        embeds = jnp.where(drop[:, None, None], null_embeds[None].astype(embeds.dtype), embeds)
        mask = jnp.where(drop[:, None], null_mask[None].astype(mask.dtype), mask)
        weight = jnp.repeat(scored, pt, axis=1)[:, :, None, None, None]
        # A random start of the RoPE time positions (one per batch) teaches the positions a long streamed video
        # reaches (its blocks sit at frame_offset = their first latent frame).
        max_offset = int(obj.max_frame_offset)
        offset = 0 if max_offset <= 0 else jax.random.randint(jax.random.fold_in(rng, 7), (), 0, max_offset + 1)
        return {"x_t": x_t, "timestep": timestep, "text_embeds": embeds, "text_mask": mask, "target": target,
                "weight": weight, "block_sizes": blocks, "frame_offset": offset}

    def loss(self, params, batch, rng, step=0):
        """(flow-matching loss, aux) for one batch."""
        inp = self.model_inputs(batch, rng)
        v = self.module.apply({"params": params}, inp["x_t"], inp["timestep"], inp["text_embeds"],
                              inp["text_mask"], block_sizes=inp["block_sizes"], frame_offset=inp["frame_offset"])
        return fm.masked_mse(v, inp["target"], inp["weight"]), {"timestep_mean": jnp.mean(inp["timestep"])}

    def tokens(self, batch_shape) -> int:
        """Video tokens per global batch (for tokens/s)."""
        b, f, h, w, _ = batch_shape
        pt, ph, pw = self.config.patch
        return b * (f // pt) * (h // ph) * (w // pw)


@dataclasses.dataclass
class AutoencoderTask:
    """An autoencoder trained to reconstruct pixel video: MSE + ``l1_weight`` * L1 (+ ``latent_l2_weight`` *
    mean(latent²), which keeps the latent scale bounded; ``foreground_weight`` weighs pixels by their distance
    from the frame's median colour). ``model.class_name``: "AutoencoderDC" (default; frames
    coded one by one) or "AutoencoderKLWan" (causal 3-D; its posterior mean is the latent, deterministic;
    ``decoder_window`` > 0 fine-tunes its decoder alone for long decodes, see `window_latents`).
    ``batch``: video (B, F, H, W, 3)."""

    config: AutoencoderDCConfig | AutoencoderKLWanConfig
    module: nn.Module
    objective: AutoencoderObjectiveConfig
    pretrained: dict | None = None
    optim: object = None

    batch_axes = {"video": ("batch", "frames", None, None, None)}
    CLASSES = {"AutoencoderDC": AutoencoderDCConfig, "AutoencoderKLWan": AutoencoderKLWanConfig}

    @classmethod
    def from_config(cls, config, null_text=None):
        """``config``: a ``TrainingConfig`` of task "autoencoder" (its reader checked ``model.class_name``)."""
        m = config.model
        arch, component = _component_config(m, cls.CLASSES[m.class_name])
        module = REGISTRY[arch.class_name].build(arch, dtype=m.dtype, param_dtype=m.param_dtype)
        return cls(arch, module, config.objective, None if component is None else component.params, config.optim)

    def example_batch(self, batch: int, video_shape, text_length: int = 0) -> dict:
        return {"video": jax.ShapeDtypeStruct((batch, *video_shape), jnp.float32)}

    def minimal_batch(self) -> dict:
        f = self.config.spatial_compression_ratio
        return self.example_batch(1, (1, f, f, self.config.in_channels))

    def init(self, rng, batch: dict) -> dict:
        params = self.module.init(rng, _one_example(batch)["video"])["params"]
        if self.pretrained is None:
            return params
        return jax.tree_util.tree_map(lambda a, p: jnp.asarray(p, a.dtype), nn.meta.unbox(params), self.pretrained)

    ENCODER = ("encoder", "quant_conv")  # AutoencoderKLWan's encoder side, frozen with decoder_window

    def optimizer(self):
        optimizer = make_optimizer(self.optim)
        if not self.objective.decoder_window:
            return optimizer
        return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, self._labels)

    def _labels(self, params):
        return {k: "frozen" if k in self.ENCODER else "trained" for k in params}

    def trained_model(self, params):
        return params

    def window_latents(self, params, x, rng):
        """decoder_window = k: latents (B, T, h, w, z) of video x (B, 1 + r(T - 1), H, W, 3), r the temporal
        ratio, each latent frame t as the frozen encoder makes it at a position j in 1..k-1 of a k-latent-frame
        window of x (frames r(t - j) .. r(t - j + k - 1)); frame 0 is the first window's frame 0.

        The windows tile the clip with stride k - 1 from a random offset o (0..k-2) per clip, clamped inside it:
        frame t sits at j = ((t - 1 + o) mod (k - 1)) + 1 of its window (uniform over 1..k-1 away from the clip's
        ends), and the encoder runs on ~T / (k - 1) windows, not T - k + 1."""
        k, r = self.objective.decoder_window, self.config.temporal_compression_ratio
        b, f = x.shape[:2]
        t_all = (f - 1) // r + 1
        count = (t_all + k - 4) // (k - 1) + 1      # windows a clip needs whatever its offset
        offset = jax.random.randint(rng, (b,), 0, k - 1)
        starts = jnp.clip((k - 1) * jnp.arange(count)[None] - offset[:, None], 0, t_all - k)   # (B, count)
        length = r * (k - 1) + 1
        take = jax.vmap(jax.vmap(lambda clip, s: jax.lax.dynamic_slice_in_dim(clip, r * s, length, axis=0),
                                 in_axes=(None, 0)))
        windows = take(x, starts)                                   # (B, count, length, H, W, 3)
        frozen = jax.lax.stop_gradient(params)
        z = self.module.apply({"params": frozen}, windows.reshape((b * count,) + windows.shape[2:]),
                              method="encode")
        z = jax.lax.stop_gradient(z.reshape((b, count) + z.shape[1:]))       # (B, count, k, h, w, C)
        t = jnp.arange(1, t_all)
        m = (t[None] - 1 + offset[:, None]) // (k - 1)                       # (B, T - 1): the window of frame t
        j = t[None] - jnp.take_along_axis(starts, m, axis=1)
        picked = z[jnp.arange(b)[:, None], m, j]                              # (B, T - 1, h, w, C)
        return jnp.concatenate([z[:, 0, :1], picked], axis=1)

    def loss(self, params, batch, rng, step=0):
        x = batch["video"].astype(jnp.float32)
        if self.objective.decoder_window:
            latents = self.window_latents(params, x, rng)
        else:
            latents = self.module.apply({"params": params}, x, method="encode")
        recon = self.module.apply({"params": params}, latents, method="decode").astype(jnp.float32)
        # foreground_weight > 0: pixels far from their frame's median colour (a small object on a plain
        # background) weigh 1 + w * distance, so the reconstruction cannot settle on the background alone.
        w = self.objective.foreground_weight
        weight = 1.0
        if w:
            median = jnp.median(x, axis=(2, 3), keepdims=True)
            weight = jax.lax.stop_gradient(1.0 + w * jnp.mean(jnp.abs(x - median), axis=-1, keepdims=True))
            weight = weight / jnp.mean(weight)
        mse = jnp.mean(weight * jnp.square(recon - x))
        l1 = jnp.mean(weight * jnp.abs(recon - x))
        latent_l2 = jnp.mean(jnp.square(latents.astype(jnp.float32)))
        loss = mse + self.objective.l1_weight * l1 + self.objective.latent_l2_weight * latent_l2
        return loss, {"mse": mse, "l1": l1, "latent_l2": latent_l2}

    def tokens(self, batch_shape) -> int:
        return int(np.prod(batch_shape[:2]))  # frames per global batch


def build_dit(model_cfg: DiTModelConfig, init_from: str):
    """(architecture, module, pretrained params stacked for scanned layers or None) of a Linear DiT: the component
    folder ``init_from``, or ``model_cfg.architecture``; built with the model section's dtype / scan / remat."""
    arch, component = _component_config(dataclasses.replace(model_cfg, init_from=init_from),
                                         SanaVideoTransformerConfig)
    m = model_cfg
    module = REGISTRY[arch.class_name].build(
        arch, dtype=m.dtype, param_dtype=m.param_dtype, scan_layers=m.scan_layers, remat_policy=m.remat_policy,
        attention_implementation=m.attention_implementation)
    pretrained = None if component is None else component.params
    if pretrained is not None and module.scan_layers:
        flat = rulebook.stack_layers(rulebook.flatten(pretrained), transformer_weights.BLOCKS, arch.num_layers)
        pretrained = rulebook.unflatten(flat)
    return arch, module, pretrained


def init_dit(module, pretrained, rng, latent_shape, text_shape):
    """A DiT's params boxed with their logical axis names: random, or ``pretrained`` in the same boxes."""
    dtype = jnp.float32
    t = jnp.zeros((1,), jnp.float32)
    boxed = module.init(rng, jnp.zeros((1, *latent_shape), dtype), t, jnp.zeros((1, *text_shape), dtype),
                        jnp.ones((1, text_shape[0]), jnp.int32))["params"]
    if pretrained is None:
        return boxed
    return jax.tree_util.tree_map(lambda box, p: box.replace_boxed(jnp.asarray(p, box.value.dtype)),
                                  boxed, pretrained, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _one_example(batch: dict) -> dict:
    """Zeros shaped like one example of ``batch`` (arrays or ShapeDtypeStructs): enough to create params."""
    return {k: jnp.zeros((1, *v.shape[1:]), v.dtype) for k, v in batch.items()}


def _tasks():
    from sana_jax.training.distill import OdeInitTask, SelfForcingTask

    return {"dit": DiTTask, "autoencoder": AutoencoderTask, "ode_init": OdeInitTask, "self_forcing": SelfForcingTask}


def make_task(config, null_text=None):
    """The task of ``config`` (a ``TrainingConfig``, or an experiment's ConfigDict: read strictly first)."""
    config = read_training_config(config)
    return _tasks()[config.task].from_config(config, null_text)
