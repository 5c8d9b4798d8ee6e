"""Long video, block by block: each block of latent frames is denoised against the carried constant-size state
of all earlier blocks, written into that state by one pass of the clean block at t = 0, decoded by the streaming
VAE decode (whose causal caches are carried too) and yielded as uint8 frames. Nothing grows with the video.

The per-block work is one compiled function, traced at most twice (the first block, which may be longer and
starts the VAE's clip, and every later block). The LTX-2 VAE's non-causal decoder runs apart from it, one run
per block retraced while its state still grows: its chunks lag the blocks and the last block flushes them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sana_jax.models.dc_ae import DCAutoencoder
from sana_jax.models.ltx2_vae import AutoencoderKLLTX2Video
from sana_jax.models.transformer import init_cache
from sana_jax.models.wan_vae import AutoencoderKLWan
from sana_jax.pipeline.finite import NonFiniteError, all_finite, require_finite
from sana_jax.pipeline.video_io import to_uint8

# LongSANA's few-step schedule (NVlabs `denoising_step_list`): uniform sigmas 1, .75, .5, .25 warped by shift 8.
FEW_STEP_TIMESTEPS = (1000, 960, 889, 727)
SAMPLERS = ("few_step", "dpm")
INITIAL_NOISE = 1_000_000  # fold_in tag of a block's initial noise (re-noising uses the step index)


# VAEs whose decode this streamer drives block by block: the Wan VAE (``decode_chunk`` carrying its causal caches),
# DC-AE (no temporal state: frame by frame) and the LTX-2 VAE (``decode_chunk`` runs: its non-causal decoder holds
# frames back, so its chunks lag the blocks and the last block flushes them).
STREAMABLE_VAES = (AutoencoderKLWan, DCAutoencoder, AutoencoderKLLTX2Video)


def check_streamable(vae_module) -> None:
    """Raises ValueError, naming the VAE class, when block streaming does not support this VAE."""
    if not isinstance(vae_module, STREAMABLE_VAES):
        raise ValueError(f"stream: block-by-block decoding is not supported for the {type(vae_module).__name__} VAE "
                         f"(supported: {', '.join(c.__name__ for c in STREAMABLE_VAES)}); sample with the pipeline's "
                         "__call__ instead")


def block_sizes(latent_frames: int, block_frames: int) -> tuple[int, ...]:
    """Blocks of ``block_frames`` latent frames; the first absorbs the remainder (21, 10 -> (11, 10))."""
    if block_frames < 1:
        raise ValueError(f"block_frames={block_frames}; expected >= 1")
    n = max(latent_frames // block_frames, 1)
    return (latent_frames - (n - 1) * block_frames,) + (block_frames,) * (n - 1)


class BlockStreamer:
    """Owns the compiled per-block step of a pipeline. ``traces`` counts how often it was traced."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.traces = 0
        self._step = jax.jit(self._block, static_argnames=("shape", "schedule", "cfg", "first", "pin", "decode"))
        self._ltx_run = jax.jit(functools.partial(_ltx_run, pipe.vae.module), static_argnames=("mode",))

    def run(self, embeds, mask, *, latent_shape, blocks, seed, sampler, schedule, guidance_scale, cfg,
            image_latents):
        """Yields (block latents (B, f, H', W', C) float32, uint8 video chunk) block after block; NaN/inf in a
        block's latents or its decoded frames stop the stream with ``NonFiniteError`` naming the block."""
        pipe = self.pipe
        check_streamable(pipe.vae.module)
        b, _, h, w, _ = latent_shape
        ph, pw = pipe.transformer.config.patch[1:]
        batch = 2 * b if cfg else b
        cache = init_cache(pipe.transformer.config, batch, h // ph, w // pw, pipe.transformer.module.dtype)
        vae_cache = None
        ltx = isinstance(pipe.vae.module, AutoencoderKLLTX2Video)
        key = jax.random.key(seed)
        offset = 0
        for index, size in enumerate(blocks):
            first, last = index == 0, index == len(blocks) - 1
            x, video, video_ok, cache, vae_cache = self._step(
                pipe.transformer.params, pipe.vae.params, jax.random.fold_in(key, index), cache, vae_cache, embeds,
                mask, jnp.int32(offset), jnp.float32(guidance_scale), image_latents if first else None,
                shape=(b, size, h, w, latent_shape[-1]), schedule=schedule if sampler == "dpm" else None, cfg=cfg,
                first=first, pin=first and image_latents is not None, decode=not ltx)
            offset += size
            where = f"block {index + 1} of {len(blocks)}"
            if not bool(all_finite(x)):
                raise NonFiniteError(f"denoising ({where})")
            if ltx:  # one decoder run per block; the first chunks are short (frames still crossing the layers)
                video, video_ok, vae_cache = self._ltx_run(pipe.vae.params, x, vae_cache,
                                                           mode="last" if last else "stream")
            require_finite(video_ok, f"the VAE decode ({where})")
            yield x, video

    def _block(self, tparams, vparams, key, cache, vae_cache, embeds, mask, offset, guidance, image_latents, *,
               shape, schedule, cfg, first, pin, decode):
        self.traces += 1  # runs only while tracing
        pipe = self.pipe
        tmodule = pipe.transformer.module
        b, f = shape[:2]
        x = jax.random.normal(jax.random.fold_in(key, INITIAL_NOISE), shape, jnp.float32)
        if pin:  # image-to-video: the image is latent frame 0 of the first block, clean (t = 0), never updated
            x = x.at[:, :1].set(image_latents.astype(jnp.float32))

        def velocity(x, t):
            tt = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b, f))
            if pin:
                tt = tt.at[:, 0].set(0.0)
            xin, tin = (jnp.concatenate([x, x]), jnp.concatenate([tt, tt])) if cfg else (x, tt)
            v, _ = tmodule.apply({"params": tparams}, xin.astype(tmodule.dtype), tin, embeds, mask, cache=cache,
                                 frame_offset=offset)
            v = v.astype(jnp.float32)
            if cfg:
                uncond, cond = jnp.split(v, 2)
                v = uncond + guidance * (cond - uncond)
            return v

        if schedule is not None:  # multistep flow DPM-Solver with CFG
            pinned, moving = (x[:, :1], x[:, 1:]) if pin else (None, x)
            join = (lambda m: jnp.concatenate([pinned, m], axis=1)) if pin else (lambda m: m)

            def body(i, carry):
                moving, state = carry
                v = velocity(join(moving), schedule.model_timestep(i))
                return schedule.step(state, v[:, 1:] if pin else v, i, moving)

            moving, _ = jax.lax.fori_loop(0, schedule.num_inference_steps, body,
                                          (moving, schedule.init_state(moving)))
            x = join(moving)
        else:  # LongSANA few-step: predict x0, re-noise to the next level with fresh noise
            for j, t in enumerate(FEW_STEP_TIMESTEPS):
                sigma = t / 1000.0
                x0 = x - sigma * velocity(x, t)
                if pin:
                    x0 = x0.at[:, :1].set(x[:, :1])
                if j + 1 == len(FEW_STEP_TIMESTEPS):
                    x = x0
                    break
                nxt = FEW_STEP_TIMESTEPS[j + 1] / 1000.0
                noisy = (1 - nxt) * x0 + nxt * jax.random.normal(jax.random.fold_in(key, j), shape, jnp.float32)
                x = noisy.at[:, :1].set(x0[:, :1]) if pin else noisy

        # Write the clean block into the state: one pass at t = 0 (for each CFG branch).
        xin = jnp.concatenate([x, x]) if cfg else x
        _, cache = tmodule.apply({"params": tparams}, xin.astype(tmodule.dtype),
                                 jnp.zeros(xin.shape[:2], jnp.float32), embeds, mask, cache=cache,
                                 frame_offset=offset)
        vae = pipe.vae.module
        z = x.astype(vae.dtype)
        if not decode:  # the caller decodes (LTX-2: runs that do not line up with blocks)
            return x, None, jnp.bool_(True), cache, vae_cache
        if isinstance(vae, AutoencoderKLWan):
            video, vae_cache = vae.apply({"params": vparams}, z, vae_cache, first=first, method="decode_chunk")
        else:  # an autoencoder without temporal state (DC-AE) decodes frame by frame
            video = vae.apply({"params": vparams}, z, method="decode")
        return x, to_uint8(video), all_finite(video), cache, vae_cache


def _ltx_run(module, params, latents, state, *, mode):
    """One LTX-2 decoder run -> (uint8 video chunk, all finite, state for the next run)."""
    video, state = module.apply({"params": params}, latents.astype(module.dtype), state, mode,
                                method="decode_chunk")
    return to_uint8(video), all_finite(video), state
