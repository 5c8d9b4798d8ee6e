"""Guided sampling, the one loop: the guided velocity (classifier-free guidance as one batched call, image-to-video
frame-0 pinning), the multistep-scheduler loop and LongSANA's few-step loop, as pure functions of the transformer
module, its params and arrays. ``SanaVideoPipeline.__call__`` runs ``multistep`` over the whole clip; the block
streamer runs ``multistep`` or ``few_step`` on each block against the carried state (``cache``); a training
rollout calls ``few_step`` to sample exactly what ``pipe.stream`` samples.

Both loops return (latents, the first step whose latents hold NaN/inf, or -1) so a caller names the stage.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sana_jax.pipeline.finite import first_non_finite_step

# LongSANA's few-step schedule (NVlabs `denoising_step_list`): uniform sigmas 1, .75, .5, .25 warped by shift 8.
FEW_STEP_TIMESTEPS = (1000, 960, 889, 727)


def guided_velocity(module, params, x, t, embeds, mask, guidance_scale, *, cfg: bool, pin: bool,
                    per_frame: bool = False, cache=None, frame_offset=0, block_sizes=None, cfg_batched: bool = True):
    """The guided velocity at timestep ``t`` (scalar) for latents x (B, F', H', W', C) -> float32, x's shape.

    ``cfg``: embeds / mask are [negative; positive] (2B rows) and both branches run as one batched call, mixed as
    uncond + guidance_scale (cond - uncond); ``cfg_batched=False``: the two branches as two calls of B rows
    instead, the same velocity with half the transformer's activation memory. ``pin``: latent frame 0 is clean
    (image-to-video), timestep 0 there.
    ``per_frame``: pass the timestep per latent frame (B, F') even when unpinned (else (B,)). ``cache``: the
    block-causal state of the blocks before x (``x`` is the next block, RoPE time starting at ``frame_offset``).
    ``block_sizes``: without a cache, attend block-causally over x's latent frames in these blocks.
    """
    b, f = x.shape[:2]
    if pin or per_frame:
        tt = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b, f))
        if pin:
            tt = tt.at[:, 0].set(0.0)
    else:
        tt = jnp.broadcast_to(t, (b,))
    state = dict(block_sizes=block_sizes, frame_offset=frame_offset) if cache is None else \
        dict(cache=cache, frame_offset=frame_offset)

    def velocity(x, tt, embeds, mask):
        v = module.apply({"params": params}, x.astype(module.dtype), tt, embeds, mask, **state)
        return (v[0] if cache is not None else v).astype(jnp.float32)  # with a cache the model also returns it

    if not cfg:
        return velocity(x, tt, embeds, mask)
    if cfg_batched:
        uncond, cond = jnp.split(velocity(jnp.concatenate([x, x]), jnp.concatenate([tt, tt]), embeds, mask), 2)
    else:
        (neg, pos), (neg_mask, pos_mask) = jnp.split(embeds, 2), jnp.split(mask, 2)
        uncond = velocity(x, tt, neg, neg_mask)
        cond = velocity(x, tt, pos, pos_mask)
    return uncond + guidance_scale * (cond - uncond)


def multistep(module, params, latents, embeds, mask, guidance_scale, *, schedule, cfg: bool, pin: bool,
              per_frame: bool = False, cache=None, frame_offset=0, on_step=None, cfg_batched: bool = True):
    """All steps of the multistep ``schedule`` (flow DPM-Solver++, flow Euler) under one ``lax.fori_loop``.

    latents (B, F', H', W', C) float32: the initial noise, with the clean image latents in frame 0 when ``pin``
    (that frame is never updated). ``schedule`` holds the timestep / sigma tables and the update rule.
    ``on_step(i)``: a host callback after each step (progress). ``cfg_batched``: see `guided_velocity`. Returns
    (latents, first non-finite step or -1).
    """
    pinned = latents[:, :1]
    moving = latents[:, 1:] if pin else latents
    join = (lambda m: jnp.concatenate([pinned, m], axis=1)) if pin else (lambda m: m)

    def body(i, carry):
        moving, state, bad = carry
        v = guided_velocity(module, params, join(moving), schedule.model_timestep(i), embeds, mask, guidance_scale,
                            cfg=cfg, pin=pin, per_frame=per_frame, cache=cache, frame_offset=frame_offset,
                            cfg_batched=cfg_batched)
        moving, state = schedule.step(state, v[:, 1:] if pin else v, i, moving)
        if on_step is not None:
            jax.debug.callback(on_step, i)
        return moving, state, first_non_finite_step(bad, i, moving)

    moving, _, bad = jax.lax.fori_loop(0, schedule.num_inference_steps, body,
                                       (moving, schedule.init_state(moving), jnp.int32(-1)))
    return join(moving), bad


def few_step(module, params, noise, key, embeds, mask, guidance_scale=1.0, *, cfg: bool = False, pin: bool,
             per_frame: bool = True, cache=None, frame_offset=0, timesteps=FEW_STEP_TIMESTEPS, exit_step=None):
    """LongSANA's few-step sampler: at each timestep predict x0 = x - sigma v, then re-noise x0 to the next level
    with fresh noise ``jax.random.fold_in(key, step)``; the prediction at the exit step is the sample.

    noise (B, F', H', W', C) float32, frame 0 the clean image latents when ``pin`` (kept through every step).
    ``exit_step``: None runs every step (sampling). A (traced) int in [0, len(timesteps)) is Self-Forcing's
    training rollout: the steps before it run under stop-gradient, the prediction at ``timesteps[exit_step]`` is the
    sample and carries the gradient; with exit_step = the last step it returns exactly what sampling returns.
    Returns (latents, first non-finite step or -1).
    """
    if not timesteps:
        raise ValueError("few_step: timesteps is empty; expected at least one")
    levels = jnp.asarray(timesteps, jnp.float32)
    last = len(timesteps) - 1

    def predict(x, j, params=params):
        t = levels[j]
        x0 = x - (t / 1000.0) * guided_velocity(module, params, x, t, embeds, mask, guidance_scale, cfg=cfg, pin=pin,
                                                 per_frame=per_frame, cache=cache, frame_offset=frame_offset)
        return x0.at[:, :1].set(x[:, :1]) if pin else x0

    def renoise(j, carry, params=params):  # step j, then x0 re-noised to the level of step j + 1 (after the last: 0)
        x, bad = carry
        x0 = predict(x, j, params)
        nxt = jnp.append(levels, 0.0)[j + 1] / 1000.0
        noisy = (1 - nxt) * x0 + nxt * jax.random.normal(jax.random.fold_in(key, j), x.shape, jnp.float32)
        x = noisy.at[:, :1].set(x0[:, :1]) if pin else noisy
        return x, first_non_finite_step(bad, j, x)

    carry = (noise, jnp.int32(-1))
    if exit_step is None:
        # Every step in one loop (the last re-noises to level 0: x0 itself): the DiT is compiled once, not per
        # step; a cold stream's time is mostly compilation.
        return jax.lax.fori_loop(0, last + 1, renoise, carry)
    frozen = jax.lax.stop_gradient(params)  # a loop of traced length cannot be differentiated: none is needed
    carry = jax.lax.fori_loop(0, exit_step, lambda j, c: renoise(j, c, frozen), carry)
    x, bad = carry
    x0 = predict(x, exit_step)
    return x0, first_non_finite_step(bad, exit_step, x0)
