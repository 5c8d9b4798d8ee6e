"""LongSANA's distillation of a block-causal few-step student (reference notes: longsana_training.md).

Stage 1, ``OdeInitTask``: the student regresses a teacher's ODE trajectories (recorded by
``python -m sana_jax.training.ode_pairs``) onto their clean end, each block at its own trajectory state.
Stages 2-3, ``SelfForcingTask``: the student rolls out its own blocks through its own carried state — the block
function of ``pipe.stream(sampler="few_step")`` (``stream.denoise_block``), with a random exit step per block —
and is trained by Distribution Matching Distillation: the frozen teacher's CFG-guided x0 (real score) against a
critic's x0 (fake score), the critic trained by flow matching on the student's detached samples. A long rollout
runs its earlier blocks without gradient, so the memory of a step does not grow with the rollout's length.

Flow convention throughout: x_t = (1 - sigma) x0 + sigma eps, the network's velocity v ~ eps - x0, sigma = t / 1000,
x0 = x_t - sigma v.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sana_jax.config import SanaVideoCausalTransformerConfig, SanaVideoTransformerConfig
from sana_jax.models.transformer import init_cache
from sana_jax.pipeline import denoise
from sana_jax.pipeline.stream import INITIAL_NOISE, block_sizes, denoise_block, write_block
from sana_jax.training import objective as fm
from sana_jax.training.config import OdeInitConfig, SelfForcingConfig
from sana_jax.training.state import make_optimizer


# -- DMD ------------------------------------------------------------------------------------------------------------

def dmd_timesteps(rng, batch: int, shift: float, low: float, high: float):
    """(B,) float32: u ~ U{0, .., 999} / 1000, t = 1000 s u / (1 + (s - 1) u), clipped to [low, high]."""
    u = jax.random.randint(rng, (batch,), 0, 1000).astype(jnp.float32) / 1000.0
    return jnp.clip(1000.0 * shift * u / (1.0 + (shift - 1.0) * u), low, high)


def noisy(x, noise, t, pin: bool):
    """x_t at timesteps t (B,); with ``pin`` latent frame 0 stays clean (image-to-video context)."""
    sigma = (t / 1000.0)[:, None, None, None, None]
    xt = (1.0 - sigma) * x + sigma * noise
    return xt.at[:, :1].set(x[:, :1]) if pin else xt


def dmd_loss(x, x0_real, x0_fake, weight):
    """The DMD generator loss as a surrogate: 0.5 * masked mean of (x - sg(x - g))², whose gradient in x is
    g * weight / (B * N), g = (x0_fake - x0_real) / mean|x - x0_real| per sample (over the scored elements;
    non-finite entries of g are 0). ``weight`` (broadcastable to x): 1 where the loss counts."""
    x0_real, x0_fake = jax.lax.stop_gradient(x0_real), jax.lax.stop_gradient(x0_fake)
    w = jnp.broadcast_to(weight.astype(jnp.float32), x.shape)
    axes = tuple(range(1, x.ndim))
    norm = jnp.sum(jnp.abs(x - x0_real) * w, axes, keepdims=True) / jnp.maximum(jnp.sum(w, axes, keepdims=True), 1)
    g = jnp.nan_to_num((x0_fake - x0_real) / norm, nan=0.0, posinf=0.0, neginf=0.0)
    return 0.5 * fm.masked_mse(x, jax.lax.stop_gradient(x - g), weight)


def dmd_generator_loss(x, noise, t, real_velocity, fake_velocity, weight, *, pin: bool = False):
    """The generator's DMD loss of samples x (B, F, H, W, C): x_t = noisy(x, noise, t); the real and fake scores
    as x0 = x_t - sigma v from ``real_velocity(x_t, t)`` / ``fake_velocity(x_t, t)`` (no gradient through them)."""
    xt = jax.lax.stop_gradient(noisy(x, noise, t, pin))
    sigma = (t / 1000.0)[:, None, None, None, None]
    x0_real = xt - sigma * real_velocity(xt, t)
    x0_fake = xt - sigma * fake_velocity(xt, t)
    return dmd_loss(x, x0_real, x0_fake, weight)


def critic_loss(x, noise, t, velocity, weight, *, pin: bool = False):
    """The critic's flow-matching loss on detached samples x: masked MSE of ``velocity(x_t, t)`` to eps - x."""
    x = jax.lax.stop_gradient(x)
    return fm.masked_mse(velocity(noisy(x, noise, t, pin), t), noise - x, weight)


# -- the student's rollout ------------------------------------------------------------------------------------------

def rollout(module, params, key, embeds, mask, *, shape, blocks, exits, timesteps):
    """The student's blocks (``blocks``: latent frames each, as ``stream.block_sizes`` lays them out), each one
    ``denoise_block`` call against the state of the earlier ones, exit step ``exits[i]`` for block i (the last step
    for all: exactly ``pipe.stream(sampler="few_step")`` with ``key = jax.random.key(seed)``). Every block's
    gradient flows through its own exit step only. Returns (B, sum(blocks), H, W, C) float32."""
    b, _, h, w, c = shape
    cache = _zero_cache(module, b, h, w)
    out, offset = [], 0
    for i, size in enumerate(blocks):
        x, cache = denoise_block(module, params, jax.random.fold_in(key, i), cache, embeds, mask, jnp.int32(offset),
                                 shape=(b, size, h, w, c), exit_step=exits[i], timesteps=timesteps)
        out.append(x)
        offset += size
    return jnp.concatenate(out, axis=1)


def long_rollout(module, params, key, embeds, mask, *, shape, block_frames, exits, extra, timesteps,
                 context: bool = True):
    """A long rollout scored on its last window: the first block (``block_sizes`` of the clip) and ``extra``
    (traced, 0 <= extra) more blocks without gradient, then (F - 1) / block_frames window blocks with gradient.
    Returns (B, F, H, W, C): the last latent frame before the window (clean context) and the window's blocks
    (without ``context``: the window's blocks alone, (B, F - 1, H, W, C)).
    Memory does not grow with ``extra``: the earlier blocks are a loop that keeps only the state and one frame."""
    b, f, h, w, c = shape
    first = block_sizes(f, block_frames)[0]
    frozen = jax.lax.stop_gradient(params)
    cache = _zero_cache(module, b, h, w)
    x, cache = denoise_block(module, frozen, jax.random.fold_in(key, 0), cache, embeds, mask, jnp.int32(0),
                             shape=(b, first, h, w, c), exit_step=exits[0], timesteps=timesteps)

    def earlier(i, carry):  # block i + 1, without gradient
        cache, _ = carry
        x, cache = denoise_block(module, frozen, jax.random.fold_in(key, i + 1), cache, embeds, mask,
                                 jnp.int32(first + i * block_frames), shape=(b, block_frames, h, w, c),
                                 exit_step=exits[i + 1], timesteps=timesteps)
        return cache, x[:, -1:]

    cache, last = jax.lax.fori_loop(0, extra, earlier, (cache, x[:, -1:]))
    out = [jax.lax.stop_gradient(last)] if context else []
    for j in range((f - 1) // block_frames):
        index = 1 + extra + j
        x, cache = denoise_block(module, params, jax.random.fold_in(key, index), cache, embeds, mask,
                                 (first + (extra + j) * block_frames).astype(jnp.int32),
                                 shape=(b, block_frames, h, w, c), exit_step=exits[index], timesteps=timesteps)
        out.append(x)
    return jnp.concatenate(out, axis=1)


def _zero_cache(module, b, h, w):
    cfg = module.config
    ph, pw = cfg.patch[1:]
    return init_cache(cfg, b, h // ph, w // pw, module.dtype)


# -- teacher ODE trajectories (the data of stage 1) -------------------------------------------------------------------

def uniform_sigmas(start: float, end: float, steps: int, shift: float) -> tuple[float, ...]:
    """``steps`` + 1 sigmas from start to end, uniform in the unshifted time u (sigma = s u / (1 + (s - 1) u))."""
    def unshift(sigma):
        return sigma / (shift - (shift - 1.0) * sigma)
    u = np.linspace(unshift(start), unshift(end), steps + 1)
    sig = shift * u / (1.0 + (shift - 1.0) * u)
    sig[0], sig[-1] = start, end
    return tuple(float(s) for s in sig)


def teacher_trajectories(module, params, key, embeds, mask, negative, negative_mask, *, shape, blocks,
                         guidance_scale, timesteps, steps_per_level, shift=8.0):
    """The teacher's CFG-guided flow-Euler ODE samples, block by block against its carried state (as the stream
    samples), recorded at ``timesteps`` and at the end: (B, len(timesteps) + 1, F, H, W, C) float32, index 0 the
    initial noise of each block (fold_in(fold_in(key, block), INITIAL_NOISE), as the stream draws it)."""
    from sana_jax.schedulers.flow_euler import SigmaEulerSchedule

    b, _, h, w, c = shape
    both = jnp.concatenate([negative, embeds]), jnp.concatenate([negative_mask, mask])
    levels = [t / 1000.0 for t in timesteps] + [0.0]
    cache = _zero_cache(module, 2 * b, h, w)
    out, offset = [], 0
    for i, size in enumerate(blocks):
        x = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), INITIAL_NOISE), (b, size, h, w, c))
        states = [x]
        for start, end in zip(levels, levels[1:]):
            schedule = SigmaEulerSchedule(uniform_sigmas(start, end, steps_per_level, shift))
            x, _ = denoise.multistep(module, params, x, *both, guidance_scale, schedule=schedule, cfg=True,
                                     pin=False, per_frame=True, cache=cache, frame_offset=jnp.int32(offset))
            states.append(x)
        cache = write_block(module, params, x, cache, *both, jnp.int32(offset), cfg=True)
        out.append(jnp.stack(states, axis=1))
        offset += size
    return jnp.concatenate(out, axis=2)


# -- the tasks -------------------------------------------------------------------------------------------------------

def _causal(arch: SanaVideoTransformerConfig) -> SanaVideoCausalTransformerConfig:
    """The student's component config: its architecture under the block-causal (LongSANA) class name."""
    return SanaVideoCausalTransformerConfig(**{f.name: getattr(arch, f.name) for f in dataclasses.fields(arch)})


def _check_geometry(arch, where: str) -> None:
    if arch.patch[0] != 1:
        raise ValueError(f"{where}: the student's temporal patch is {arch.patch[0]}; block-causal distillation "
                         "needs patch_size[0] == 1")


class _StudentTask:
    """What both distillation tasks share: a batch of clips (``latents`` (B, *prefix, F, H, W, C)) with text."""

    def _clip_prefix(self) -> tuple[int, ...]:
        return ()

    def example_batch(self, batch: int, latent_shape, text_length: int) -> dict:
        return {"latents": jax.ShapeDtypeStruct((batch, *self._clip_prefix(), *latent_shape), jnp.float32),
                "text_embeds": jax.ShapeDtypeStruct((batch, text_length, self.config.caption_channels), jnp.float32),
                "text_mask": jax.ShapeDtypeStruct((batch, text_length), jnp.int32)}

    def minimal_batch(self) -> dict:
        _, ph, pw = self.config.patch
        return self.example_batch(1, (1, ph, pw, self.config.in_channels), 1)

    def tokens(self, batch_shape) -> int:
        """Video tokens per global batch (for tokens/s): the clips' latent frames x token grid."""
        f, h, w = batch_shape[-4:-1]
        _, ph, pw = self.config.patch
        return batch_shape[0] * f * (h // ph) * (w // pw)


@dataclasses.dataclass
class OdeInitTask(_StudentTask):
    """Stage 1. ``batch``: latents (B, K + 1, F, H, W, C) — the trajectory at the K ``timesteps`` then its clean
    end — text_embeds (B, L, D), text_mask (B, L)."""

    config: SanaVideoCausalTransformerConfig
    module: nn.Module
    objective: OdeInitConfig
    optim: object
    pretrained: dict | None = None

    batch_axes = {"latents": ("batch", None, "frames", None, None, None), "text_embeds": ("batch", None, None),
                  "text_mask": ("batch", None)}

    @classmethod
    def from_config(cls, config, null_text=None):
        from sana_jax.training.tasks import build_dit

        arch, module, pretrained = build_dit(config.model, config.model.init_from)
        _check_geometry(arch, "ode_init")
        return cls(_causal(arch), module, config.objective, config.optim, pretrained)

    def _clip_prefix(self) -> tuple[int, ...]:
        return (len(self.objective.timesteps) + 1,)

    def init(self, rng, batch: dict) -> dict:
        from sana_jax.training.tasks import init_dit

        return init_dit(self.module, self.pretrained, rng, batch["latents"].shape[2:], batch["text_embeds"].shape[1:])

    def optimizer(self):
        return make_optimizer(self.optim)

    def trained_model(self, params):
        return params

    def loss(self, params, batch, rng, step=0):
        traj = batch["latents"].astype(jnp.float32)
        b, k1, f = traj.shape[:3]
        if k1 != len(self.objective.timesteps) + 1:
            raise ValueError(f"ode_init: the cache holds {k1} trajectory states per clip; objective.timesteps "
                             f"{self.objective.timesteps} needs {len(self.objective.timesteps) + 1}")
        blocks = block_sizes(f, self.objective.block_frames)
        k_state, k_offset = jax.random.split(rng)
        state = jax.random.randint(k_state, (b, len(blocks)), 0, k1)          # k1 - 1: the clean end (context)
        frame_state = jnp.repeat(state, np.asarray(blocks), axis=1, total_repeat_length=f)
        x = jnp.take_along_axis(traj, frame_state[:, None, :, None, None, None], axis=1)[:, 0]
        t = jnp.asarray((*self.objective.timesteps, 0.0), jnp.float32)[frame_state]      # (B, F)
        max_offset = int(self.objective.max_frame_offset)
        offset = 0 if max_offset <= 0 else jax.random.randint(k_offset, (), 0, max_offset + 1)
        v = self.module.apply({"params": params}, x, t, batch["text_embeds"], batch["text_mask"],
                              block_sizes=blocks, frame_offset=offset).astype(jnp.float32)
        x0 = x - (t / 1000.0)[:, :, None, None, None] * v
        weight = (frame_state < k1 - 1)[:, :, None, None, None]
        return fm.masked_mse(x0, traj[:, -1], weight), {"timestep_mean": jnp.mean(t)}



@dataclasses.dataclass
class SelfForcingTask(_StudentTask):
    """Stages 2-3. Params: {"generator": the student (trained), "critic": the fake score (trained, its own
    optimiser), "teacher": the real score (frozen: no update, no gradient)}. ``batch``: latents (B, F, H, W, C) —
    only their shape is used: the clip the rollout makes and the scores see — text_embeds (B, L, D), text_mask."""

    config: SanaVideoCausalTransformerConfig
    module: nn.Module
    critic_module: nn.Module
    teacher_module: nn.Module
    objective: SelfForcingConfig
    optim: object
    critic_optim: object
    negative: tuple[np.ndarray, np.ndarray]
    pretrained: dict

    batch_axes = {"latents": ("batch", "frames", None, None, None), "text_embeds": ("batch", None, None),
                  "text_mask": ("batch", None)}

    @classmethod
    def from_config(cls, config, null_text=None):
        from sana_jax.training.tasks import build_dit

        obj = config.objective
        arch, module, generator = build_dit(config.model, config.model.init_from)
        _check_geometry(arch, "self_forcing")
        teacher_path = _transformer_folder(obj.teacher, "objective.teacher")
        _, teacher_module, teacher = build_dit(config.model, teacher_path)
        critic_path = _transformer_folder(obj.critic_init_from, "objective.critic_init_from") \
            if obj.critic_init_from else teacher_path
        _, critic_module, critic = build_dit(config.model, critic_path)
        negative = null_text
        if obj.negative_prompt:
            negative = _encode_negative(obj.teacher, obj.negative_prompt, null_text)
        if negative is None:
            raise ValueError("self_forcing: the real score needs the empty caption's embedding (the data's null "
                             "text) or objective.negative_prompt")
        return cls(_causal(arch), module, critic_module, teacher_module, obj, config.optim, config.critic_optim,
                   negative, {"generator": generator, "critic": critic, "teacher": teacher})

    def init(self, rng, batch: dict) -> dict:
        from sana_jax.training.tasks import init_dit

        shape, text = batch["latents"].shape[1:], batch["text_embeds"].shape[1:]
        return {name: init_dit(module, self.pretrained[name], rng, shape, text)
                for name, module in (("generator", self.module), ("critic", self.critic_module),
                                     ("teacher", self.teacher_module))}

    def optimizer(self):
        """The generator's AdamW applied every ``generator_every``-th step (its state untouched in between), the
        critic's every step, the teacher's never."""
        every = int(self.objective.generator_every)
        generator = optax.transforms.conditionally_transform(make_optimizer(self.optim),
                                                             lambda count: count % every == 0)
        return optax.multi_transform(
            {"generator": generator, "critic": make_optimizer(self.critic_optim), "teacher": optax.set_to_zero()},
            lambda params: {name: jax.tree_util.tree_map(lambda _: name, sub) for name, sub in params.items()})

    def trained_model(self, params):
        return params["generator"]

    def clip_layout(self, shape):
        """(the blocks the scores see, pinned frame 0, whether the rollout is long, rollout blocks at most)."""
        f, bf = shape[1], int(self.objective.block_frames)
        long = int(self.objective.long_rollout_blocks) > 0
        if long and (f - 1) % bf:
            raise ValueError(f"self_forcing: a long rollout scores one context frame and whole blocks; the clip's "
                             f"{f} latent frames minus 1 is not a multiple of objective.block_frames={bf}")
        most = 1 + int(self.objective.long_rollout_blocks) + (f - 1) // bf if long else len(block_sizes(f, bf))
        pin = long and self.objective.window_context
        scored = block_sizes(f if pin or not long else f - 1, bf)
        return scored, pin, long, most

    def samples(self, params, key, embeds, mask, shape):
        """The student's rollout (B, F, H, W, C) (gradient to ``params`` through each scored block's exit step)."""
        blocks, _, long, most = self.clip_layout(shape)
        k_exit, k_noise, k_extra = jax.random.split(key, 3)
        timesteps = tuple(self.objective.timesteps)
        exits = jax.random.randint(k_exit, (most,), 0, len(timesteps))
        if not long:
            return rollout(self.module, params, k_noise, embeds, mask, shape=shape, blocks=blocks, exits=exits,
                           timesteps=timesteps)
        extra = jax.random.randint(k_extra, (), 0, int(self.objective.long_rollout_blocks) + 1)
        return long_rollout(self.module, params, k_noise, embeds, mask, shape=shape,
                            block_frames=int(self.objective.block_frames), exits=exits, extra=extra,
                            timesteps=timesteps, context=bool(self.objective.window_context))

    def _velocity(self, module, params, embeds, mask, guidance, *, cfg, pin, blocks, frozen=True):
        """v(x_t, t (B,)) of a score model over the scored clip; ``frozen``: no gradient to its params."""
        def v(xt, t):
            p = jax.lax.stop_gradient(params) if frozen else params
            return denoise.guided_velocity(module, p, xt, t[:, None], embeds, mask, guidance, cfg=cfg, pin=pin,
                                           per_frame=True, block_sizes=blocks)
        return v

    def loss(self, params, batch, rng, step=0):
        """DMD of the generator's rollout (on generator steps) + the critic's flow-matching loss."""
        obj = self.objective
        embeds, mask = batch["text_embeds"], batch["text_mask"].astype(jnp.int32)
        shape = batch["latents"].shape
        b = shape[0]
        blocks, pin, _, _ = self.clip_layout(shape)
        weight = jnp.ones((1, sum(blocks), 1, 1, 1), jnp.float32)
        if pin:
            weight = weight.at[:, 0].set(0.0)
        keys = jax.random.split(rng, 6)
        neg, neg_mask = (jnp.broadcast_to(jnp.asarray(a)[None], (b, *np.shape(a))) for a in self.negative)
        both = jnp.concatenate([neg.astype(embeds.dtype), embeds]), jnp.concatenate([neg_mask.astype(mask.dtype), mask])
        real = self._velocity(self.teacher_module, params["teacher"], *both, obj.guidance_scale, cfg=True, pin=pin,
                              blocks=blocks)
        fake = self._velocity(self.critic_module, params["critic"], embeds, mask, 1.0, cfg=False, pin=pin,
                              blocks=blocks)

        def generator_step(p):
            x = self.samples(p["generator"], keys[0], embeds, mask, shape)
            t = dmd_timesteps(keys[1], b, obj.dmd_shift, obj.min_timestep, obj.max_timestep)
            noise = jax.random.normal(keys[2], x.shape, jnp.float32)
            return dmd_generator_loss(x, noise, t, real, fake, weight, pin=pin), jax.lax.stop_gradient(x)

        def critic_only(p):
            x = self.samples(jax.lax.stop_gradient(p["generator"]), keys[0], embeds, mask, shape)
            return jnp.zeros((), jnp.float32), jax.lax.stop_gradient(x)

        generator_turn = jnp.asarray(step) % int(obj.generator_every) == 0
        dmd, x = jax.lax.cond(generator_turn, generator_step, critic_only, params)
        t = dmd_timesteps(keys[3], b, obj.dmd_shift, obj.min_timestep, obj.max_timestep)
        noise = jax.random.normal(keys[4], x.shape, jnp.float32)
        trained = self._velocity(self.critic_module, params["critic"], embeds, mask, 1.0, cfg=False, pin=pin,
                                 blocks=blocks, frozen=False)
        critic = critic_loss(x, noise, t, trained, weight, pin=pin)
        return dmd + critic, {"dmd": dmd, "critic": critic, "generator_step": generator_turn.astype(jnp.float32),
                              "sample_abs_mean": jnp.mean(jnp.abs(x))}



def _transformer_folder(path: str, key: str) -> str:
    """A transformer component folder: ``path`` itself, or ``path/transformer`` of a pipeline folder."""
    if os.path.isfile(os.path.join(path, "model_index.json")):
        path = os.path.join(path, "transformer")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{key}={path!r}: not a transformer folder (no config.json) nor a pipeline folder")
    return path


def _encode_negative(pipeline: str, prompt: str, null_text):
    """``prompt`` encoded by the text encoder of the pipeline folder ``pipeline``, padded like the data's captions."""
    if not os.path.isfile(os.path.join(pipeline, "model_index.json")):
        raise ValueError(f"objective.negative_prompt={prompt!r} needs objective.teacher to be a pipeline folder "
                         f"(with a text encoder); {pipeline!r} is not one")
    from sana_jax import SanaVideoPipeline

    length = None if null_text is None else int(np.shape(null_text[1])[0])
    pipe = SanaVideoPipeline.from_pretrained(pipeline)
    kwargs = {} if length is None else {"max_sequence_length": length}
    embeds, mask = pipe.encode_prompt([prompt], negative=True, **kwargs)
    return np.asarray(embeds[0], np.float32), np.asarray(mask[0], np.int32)
