"""Long video, block by block: each block of latent frames is denoised against the carried constant-size state
of all earlier blocks (``denoise.multistep`` or ``denoise.few_step``), written into that state by one pass of the
clean block at t = 0, decoded by the VAE's streaming decode (``decode_chunk``, whose state is carried too) and
yielded as uint8 frames. Nothing grows with the video.

The per-block denoising is one compiled function, traced at most twice (the first block, which may be longer and
pins the image, and every later block). The decode is a second one, run with mode "stream", and "last" for the
last block: a non-causal decoder (LTX-2) holds frames back, so its chunks lag the blocks and the last one flushes
them; its state still grows over the first blocks, which retraces the decode (not the denoising) while it does.
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import jax.numpy as jnp

from sana_jax import _compile
from sana_jax.models.transformer import init_cache
from sana_jax.pipeline import denoise
from sana_jax.pipeline.denoise import FEW_STEP_TIMESTEPS
from sana_jax.pipeline.finite import NonFiniteError, all_finite, require_finite
from sana_jax.pipeline.video_io import to_uint8

SAMPLERS = ("few_step", "dpm")
INITIAL_NOISE = 1_000_000  # fold_in tag of a block's initial noise (re-noising uses the step index)
STREAM_INTERFACE = ("init_stream_state", "decode_chunk")  # what a VAE provides to be decoded block by block
_COMPILER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stream-compile")


def check_streamable(vae_module) -> None:
    """Raises ValueError, naming the VAE class, when the VAE has no streaming decode (``STREAM_INTERFACE``)."""
    missing = [name for name in STREAM_INTERFACE if not callable(getattr(vae_module, name, None))]
    if missing:
        raise ValueError(f"stream: block-by-block decoding needs a VAE with {' and '.join(STREAM_INTERFACE)}; the "
                         f"{type(vae_module).__name__} VAE has no {', '.join(missing)}; sample with the pipeline's "
                         "__call__ instead")


def block_sizes(latent_frames: int, block_frames: int) -> tuple[int, ...]:
    """Blocks of ``block_frames`` latent frames; the first absorbs the remainder (21, 10 -> (11, 10))."""
    if block_frames < 1:
        raise ValueError(f"block_frames={block_frames}; expected >= 1")
    n = max(latent_frames // block_frames, 1)
    return (latent_frames - (n - 1) * block_frames,) + (block_frames,) * (n - 1)


class BlockStreamer:
    """Owns the compiled per-block steps of a pipeline. ``traces`` counts how often the denoising was traced."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.traces = 0
        self._step = _compile.jit(self._block, static_argnames=("shape", "schedule", "cfg", "pin"))
        self._decode = _compile.jit(functools.partial(_decode_run, pipe.vae.module), static_argnames=("mode",))

    def run(self, embeds, mask, *, latent_shape, blocks, seed, sampler, schedule, guidance_scale, cfg,
            image_latents, decode_window: int = 0):
        """Yields (block latents (B, f, H', W', C) float32, uint8 video chunk) block after block; NaN/inf in a
        block's latents or its decoded frames stop the stream with ``NonFiniteError`` naming the block.

        ``decode_window`` = c > 0 (a causal VAE trained on short clips): each later block is decoded afresh
        after the video's first latent frame and the c latent frames before the block, as a clip of the length
        the VAE was trained on, and only the block's frames are kept; 0 decodes the whole video as one causal
        sequence (the VAE's carried state)."""
        pipe = self.pipe
        check_streamable(pipe.vae.module)
        flush = pipe.vae.module.HOLDS_FRAMES
        if decode_window < 0 or (decode_window and flush):
            raise ValueError(f"decode_window={decode_window}: expected 0, or > 0 with a causal VAE (the "
                             f"{type(pipe.vae.module).__name__} VAE holds frames back)" if decode_window > 0 else
                             f"decode_window={decode_window}: expected >= 0")
        b, _, h, w, c = latent_shape
        ph, pw = pipe.transformer.config.patch[1:]
        batch = 2 * b if cfg else b
        cache = init_cache(pipe.transformer.config, batch, h // ph, w // pw, pipe.transformer.module.dtype)
        vae_state = pipe.vae.module.init_stream_state()
        key = jax.random.key(seed)
        schedule = schedule if sampler == "dpm" else None
        ratio = pipe.vae.module.temporal_ratio

        def step_args(index, offset, size):
            first = index == 0
            return ((pipe.transformer.params, jax.random.fold_in(key, index), cache, embeds, mask, jnp.int32(offset),
                     jnp.float32(guidance_scale), image_latents if first else None),
                    dict(shape=(b, size, h, w, c), schedule=schedule, cfg=cfg,
                         pin=first and image_latents is not None))

        def window_length(done, size):  # latent frames of a windowed decode run after ``done`` frames
            return min(done, decode_window + 1) + size

        # A later block's step (and, for a causal VAE, its decode run) compiles on a second thread while the
        # first block compiles and runs: XLA compiles without the GIL, so a cold stream waits for one, not two.
        later = None
        if len(blocks) > 1:
            if decode_window:
                run = (window_length(blocks[0], blocks[1]), None, "whole")
            else:
                run = (blocks[1], vae_state, "stream", blocks[0])
            later = _COMPILER.submit(self._precompile, step_args(1, blocks[0], blocks[1]), (b, h, w, c),
                                     None if flush else run)
        offset = 0
        history = None  # decode_window: the first latent frame and the last c before the next block
        args, static = step_args(0, 0, blocks[0])
        pending = self._step(*args, **static)
        for index, size in enumerate(blocks):
            last = index == len(blocks) - 1
            x, cache = pending
            where = f"block {index + 1} of {len(blocks)}"
            if not bool(all_finite(x)):
                raise NonFiniteError(f"denoising ({where})")
            if decode_window and index:
                run = jnp.concatenate([history, x], axis=1)
                video, video_ok, _ = self._decode(pipe.vae.params, run, None, mode="whole")
                video = video[:, video.shape[1] - ratio * size:]
            else:
                # The first chunks of a non-causal decoder are short (frames still crossing its layers); the last
                # run flushes what it held back. A causal decoder holds nothing back: its last run is a stream
                # run (one compilation fewer).
                video, video_ok, vae_state = self._decode(pipe.vae.params, x, vae_state,
                                                          mode="last" if last and flush else "stream")
            if decode_window:
                seen = x if history is None else jnp.concatenate([history, x], axis=1)
                history = seen if offset + size <= decode_window + 1 else \
                    jnp.concatenate([seen[:, :1], seen[:, seen.shape[1] - decode_window:]], axis=1)
            offset += size
            if not last:  # dispatched before this block's frames are awaited: the two run side by side
                if index == 0:
                    later.result()    # its errors are this stream's
                args, static = step_args(index + 1, offset, blocks[index + 1])
                pending = self._step(*args, **static)
            require_finite(video_ok, f"the VAE decode ({where})")
            yield x, video

    def _precompile(self, step, latent_dims, run):
        """Compiles the block step ``step`` = (args, static args) and, unless ``run`` is None, a decode run:
        (latent frames, state, mode), with "stream" also the first run's latent frames (its state's source)."""
        args, static = step
        self._step.lower(*args, **static).compile()
        if run is None:
            return
        vae = self.pipe.vae
        b, h, w, c = latent_dims
        frames, state, mode = run[:3]
        if mode == "stream":
            first = jax.ShapeDtypeStruct((b, run[3], h, w, c), jnp.float32)
            _, _, state = jax.eval_shape(functools.partial(_decode_run, vae.module, mode="stream"), vae.params, first,
                                       state)
        self._decode.lower(vae.params, jax.ShapeDtypeStruct((b, frames, h, w, c), jnp.float32), state,
                           mode=mode).compile()

    def _block(self, tparams, key, cache, embeds, mask, offset, guidance, image_latents, *, shape, schedule, cfg,
               pin):
        self.traces += 1  # runs only while tracing
        return denoise_block(self.pipe.transformer.module, tparams, key, cache, embeds, mask, offset, guidance,
                             image_latents, shape=shape, schedule=schedule, cfg=cfg, pin=pin)


def denoise_block(tmodule, tparams, key, cache, embeds, mask, offset, guidance=1.0, image_latents=None, *, shape,
                  schedule=None, cfg=False, pin=False, exit_step=None, timesteps=FEW_STEP_TIMESTEPS):
    """One block of a stream: noise -> sampled latents (B, f, H', W', C) float32, and the state with the block
    written in. The one function both ``pipe.stream`` and Self-Forcing's training rollout run.

    ``key``: the block's key (its initial noise is fold_in(key, INITIAL_NOISE), the few-step re-noising
    fold_in(key, step)). ``schedule``: a multistep schedule (flow DPM-Solver with CFG), or None for the few-step
    sampler, whose ``exit_step`` (None: every step) is the training rollout's random exit (``denoise.few_step``).
    The state write is one pass of the clean block at t = 0 (for each CFG branch), under stop-gradient: no
    gradient crosses from one block to the next.
    """
    x = jax.random.normal(jax.random.fold_in(key, INITIAL_NOISE), shape, jnp.float32)
    if pin:  # image-to-video: the image is latent frame 0 of the first block, clean (t = 0), never updated
        x = x.at[:, :1].set(image_latents.astype(jnp.float32))
    common = dict(cfg=cfg, pin=pin, per_frame=True, cache=cache, frame_offset=offset)
    if schedule is not None:  # multistep flow DPM-Solver with CFG
        if exit_step is not None:
            raise ValueError("denoise_block: exit_step is for the few-step sampler (schedule=None)")
        x, _ = denoise.multistep(tmodule, tparams, x, embeds, mask, guidance, schedule=schedule, **common)
    else:  # LongSANA few-step: predict x0, re-noise to the next level with fresh noise
        x, _ = denoise.few_step(tmodule, tparams, x, key, embeds, mask, guidance, exit_step=exit_step,
                                timesteps=timesteps, **common)
    return x, write_block(tmodule, tparams, x, cache, embeds, mask, offset, cfg=cfg)


def write_block(tmodule, tparams, x, cache, embeds, mask, offset, *, cfg=False):
    """The state after the clean block x: one pass at t = 0 (each CFG branch), under stop-gradient."""
    clean = jax.lax.stop_gradient(x)
    xin = jnp.concatenate([clean, clean]) if cfg else clean
    _, cache = tmodule.apply({"params": jax.lax.stop_gradient(tparams)}, xin.astype(tmodule.dtype),
                             jnp.zeros(xin.shape[:2], jnp.float32), embeds, mask, cache=cache, frame_offset=offset)
    return cache


def _decode_run(module, params, latents, state, *, mode):
    """One streaming VAE decode run -> (uint8 video chunk, all finite, state for the next run)."""
    video, state = module.apply({"params": params}, latents.astype(module.dtype), state, mode,
                                method="decode_chunk")
    return to_uint8(video), all_finite(video), state
