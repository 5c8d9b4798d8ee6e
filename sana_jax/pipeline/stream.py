"""Long video, block by block: each block of latent frames is denoised against the carried constant-size state
of all earlier blocks (``denoise.multistep`` or ``denoise.few_step``), written into that state by one pass of the
clean block at t = 0, decoded by the VAE's streaming decode (``decode_chunk``, whose state is carried too) and
yielded as uint8 frames. Nothing grows with the video.

The per-block denoising is one compiled function, traced at most twice (the first block, which may be longer and
pins the image, and every later block). The decode is a second one, in one of two ways: the whole video as one
causal sequence through the VAE's carried state (``_CarriedDecode``: mode "stream", and "last" for the last block:
a non-causal decoder (LTX-2) holds frames back, so its chunks lag the blocks and the last one flushes them; its
state still grows over the first blocks, which retraces the decode while it does), or each block in a short window
after the video's first latent frame (``_WindowedDecode``).
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import jax.numpy as jnp
import numpy as np

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
        self._decode = _compile.jit(functools.partial(_decode_run, pipe.vae.module), vae=True,
                                    static_argnames=("mode",))

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
        key = jax.random.key(seed)
        schedule = schedule if sampler == "dpm" else None
        decoder = (_WindowedDecode(self, blocks, decode_window) if decode_window else
                   _CarriedDecode(self, blocks))

        def step_args(index, offset, size):
            first = index == 0
            return ((pipe.transformer.params, jax.random.fold_in(key, index), cache, embeds, mask, jnp.int32(offset),
                     jnp.float32(guidance_scale), image_latents if first else None),
                    dict(shape=(b, size, h, w, c), schedule=schedule, cfg=cfg,
                         pin=first and image_latents is not None))

        # A later block's step and the decode runs compile on a second thread while the first block compiles and
        # runs: XLA compiles without the GIL, so a cold stream waits for one, not two.
        later = None
        if len(blocks) > 1:
            later = _COMPILER.submit(self._precompile, step_args(1, blocks[0], blocks[1]),
                                     decoder.programs((b, h, w, c)))
        offset = 0
        args, static = step_args(0, 0, blocks[0])
        pending = self._step(*args, **static)
        for index, size in enumerate(blocks):
            last = index == len(blocks) - 1
            x, cache = pending
            if not bool(all_finite(x)):
                raise NonFiniteError(f"denoising (block {index + 1} of {len(blocks)})")
            if index == 1:
                later.result()    # its errors are this stream's
            offset += size
            if not last:  # dispatched before this block is decoded: the DiT and the VAE run side by side
                args, static = step_args(index + 1, offset, blocks[index + 1])
                pending = self._step(*args, **static)
            for done, latents, video, video_ok in decoder.push(index, x):
                require_finite(video_ok, f"the VAE decode (block {done + 1} of {len(blocks)})")
                yield latents, video

    def _precompile(self, step, decodes):
        """Compiles the block step ``step`` = (args, static args) and each decode run in ``decodes``: (latents,
        state, mode) as shape structures."""
        args, static = step
        self._step.lower(*args, **static).compile()
        for latents, state, mode in decodes:
            self._decode.lower(self.pipe.vae.params, latents, state, mode=mode).compile()

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


class _CarriedDecode:
    """decode_window = 0: the whole video as one causal sequence, block after block through the VAE's carried
    state. A non-causal decoder (LTX-2) holds frames back: its first chunks are short and the last run flushes."""

    def __init__(self, streamer, blocks):
        self.streamer, self.blocks = streamer, blocks
        self.state = streamer.pipe.vae.module.init_stream_state()

    def programs(self, dims):
        """The decode runs to compile ahead: a causal VAE's second run (a non-causal one's retraces anyway)."""
        vae = self.streamer.pipe.vae
        if vae.module.HOLDS_FRAMES:
            return []
        b, h, w, c = dims
        first = jax.ShapeDtypeStruct((b, self.blocks[0], h, w, c), jnp.float32)
        _, _, state = jax.eval_shape(functools.partial(_decode_run, vae.module, mode="stream"), vae.params, first,
                                     self.state)
        return [(jax.ShapeDtypeStruct((b, self.blocks[1], h, w, c), jnp.float32), state, "stream")]

    def push(self, index, x):
        """Block ``index``'s latents -> [(index, latents, uint8 frames, all finite)], dispatched, not awaited."""
        vae = self.streamer.pipe.vae
        last = index == len(self.blocks) - 1 and vae.module.HOLDS_FRAMES
        video, ok, self.state = self.streamer._decode(vae.params, x, self.state, mode="last" if last else "stream")
        return [(index, x, video, ok)]


class _WindowedDecode:
    """decode_window = c > 0 (a causal VAE trained on short clips): each block is decoded afresh after the video's
    first latent frame and the c latent frames before it, and only its frames are kept. The first block is decoded
    inside the second block's window when that window starts at frame 0 (one decode program fewer)."""

    def __init__(self, streamer, blocks, window):
        self.streamer, self.blocks, self.window = streamer, blocks, window
        self.history = None   # the first latent frame and the last c before the next block
        self.first = None     # block 0's latents, when they are decoded in block 1's window
        self.merge_first = len(blocks) > 1 and blocks[0] <= window + 1

    def programs(self, dims):
        """The window lengths of the blocks after the first, as decode runs to compile ahead."""
        b, h, w, c = dims
        lengths = sorted({min(sum(self.blocks[:i]), self.window + 1) + self.blocks[i]
                          for i in range(1, len(self.blocks))})
        return [(jax.ShapeDtypeStruct((b, n, h, w, c), jnp.float32), None, "whole") for n in lengths]

    def push(self, index, x):
        """Block ``index``'s latents -> [(index, latents, uint8 frames, all finite)]: none for a block 0 that waits
        for block 1's window, both blocks with block 1."""
        # The window is put together and cut apart on the host (the latents are small; eager device ops would
        # compile a program for every new shape, a second of a cold stream).
        x = np.asarray(x)
        seen = x if self.history is None else np.concatenate([self.history, x], axis=1)
        c = self.window
        self.history = seen if seen.shape[1] <= c + 1 else \
            np.concatenate([seen[:, :1], seen[:, seen.shape[1] - c:]], axis=1)
        if index == 0 and self.merge_first:
            self.first = x
            return []
        vae = self.streamer.pipe.vae
        video, ok, _ = self.streamer._decode(vae.params, seen, None, mode="whole")
        video = np.asarray(video)
        keep = video.shape[1] - vae.module.temporal_ratio * x.shape[1] if index else 0
        out = []
        if self.first is not None:  # block 0's frames lead block 1's window
            out.append((0, self.first, video[:, :keep], ok))
            self.first = None
        return out + [(index, x, video[:, keep:], ok)]
