"""``SanaVideoPipeline``: prompt -> Gemma2 -> one compiled denoising loop of the Linear DiT -> VAE decode -> frames.

The denoising loop (``denoise.multistep``: all steps, classifier-free guidance as one batched call, image-to-video
frame-0 pinning) is a single ``jax.jit`` program whose arguments are the params, latents, embeddings and schedule
tables, so a second call with another prompt, seed or guidance scale reuses the compiled program.

Resolution binning (``use_resolution_binning=True``, diffusers' default, off here): sample at the aspect-ratio bin
of the checkpoint's resolution closest to the asked height / width, decode, then resize (bilinear) and centre-crop
to the asked size, as diffusers' ``VideoProcessor.resize_and_crop_tensor`` does.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from sana_jax import _compile
from sana_jax.components import REGISTRY, Component, load_component
from sana_jax.config import ConfigError, read_json
from sana_jax.pipeline import denoise
from sana_jax.pipeline import prompts as prompt_lib
from sana_jax.pipeline.finite import NonFiniteError, require_finite
from sana_jax.pipeline.tokenizer_files import load_tokenizer
from sana_jax.pipeline.stream import SAMPLERS, BlockStreamer, block_sizes, check_streamable
from sana_jax.pipeline.video_io import load_image, to_uint8
from sana_jax.schedulers import load_scheduler

COMPONENTS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")
OUTPUT_TYPES = ("np", "latent")

# diffusers' SanaVideoPipeline aspect-ratio bins, height / width -> (height, width), in its table order (a tie
# between two ratios goes to the first). The 480p table serves transformers with sample_size 30, 720p with 22.
ASPECT_RATIO_480_BIN = {
    0.5: (448, 896), 0.57: (480, 832), 0.68: (528, 768), 0.78: (560, 720), 1.0: (624, 624), 1.13: (672, 592),
    1.29: (720, 560), 1.46: (768, 528), 1.67: (816, 496), 1.75: (832, 480), 2.0: (896, 448),
}
ASPECT_RATIO_720_BIN = {
    0.5: (672, 1344), 0.57: (704, 1280), 0.68: (800, 1152), 0.78: (832, 1088), 1.0: (960, 960), 1.13: (1024, 896),
    1.29: (1088, 832), 1.46: (1152, 800), 1.67: (1248, 736), 1.75: (1280, 704), 2.0: (1344, 672),
}
ASPECT_RATIO_BINS = {30: ASPECT_RATIO_480_BIN, 22: ASPECT_RATIO_720_BIN}


def closest_bin(height: int, width: int, sample_size: int) -> tuple[int, int]:
    """(height, width) of the bin for a transformer of ``sample_size`` whose ratio is closest to height / width."""
    if sample_size not in ASPECT_RATIO_BINS:
        raise ValueError(f"use_resolution_binning: no aspect-ratio bins for a transformer with sample_size="
                         f"{sample_size} (bins exist for sample_size {sorted(ASPECT_RATIO_BINS)}); pass "
                         "use_resolution_binning=False and a height / width the model divides")
    bins = ASPECT_RATIO_BINS[sample_size]
    ratio = min(bins, key=lambda r: abs(r - height / width))
    return bins[ratio]


def _bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) interpolation matrix of torch's bilinear resize with align_corners=False (no
    antialiasing): output pixel i samples the input at (i + 1/2) size_in / size_out - 1/2, clamped at 0. The scale
    is a float32 and the source position is rounded to float32 once, as torch's fused multiply-add does."""
    scale = np.float64(np.float32(size_in) / np.float32(size_out))
    src = np.maximum((scale * (np.arange(size_out) + 0.5) - 0.5).astype(np.float32), 0)
    lo = np.minimum(src.astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = np.clip(src - lo, 0, 1).astype(np.float32)
    weights = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, lo), 1 - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


@functools.partial(jax.jit, static_argnames=("height", "width"))
def resize_and_crop(video, height: int, width: int):
    """video (B, F, H, W, C) -> (B, F, height, width, C): scaled (bilinear) until it covers height x width, then
    centre-cropped, with diffusers' ``resize_and_crop_tensor`` sizes and offsets. Only the kept rows and columns
    are computed."""
    h, w = video.shape[2:4]
    if (h, w) == (height, width):
        return video
    scale = max(height / h, width / w)
    resized_h, resized_w = int(h * scale), int(w * scale)
    top, left = (resized_h - height) // 2, (resized_w - width) // 2
    rows = _bilinear_weights(h, resized_h)[top:top + height]
    cols = _bilinear_weights(w, resized_w)[left:left + width]
    hp = jax.lax.Precision.HIGHEST
    video = jnp.einsum("yh,bfhwc->bfywc", rows, video.astype(jnp.float32), precision=hp)
    return jnp.einsum("xw,bfywc->bfyxc", cols, video, precision=hp)


def vae_factors(vae_config) -> tuple[int, int]:
    """(spatial, temporal) video pixels / frames per latent one, as the VAE built from ``vae_config`` states them
    (``spatial_ratio``, ``temporal_ratio``); building the module allocates nothing."""
    vae = REGISTRY[vae_config.class_name].build(vae_config)
    return vae.spatial_ratio, vae.temporal_ratio


MAX_SEED = 2**32  # jax.random.key keeps 32 bits of a seed: larger ones would alias smaller ones


def check_sampling_args(*, num_inference_steps: int, guidance_scale: float, seed: int) -> None:
    """The call arguments that need no model: errors name the argument and the range expected."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps!r}; expected an integer >= 1")
    if not isinstance(guidance_scale, (int, float, np.number)) or not np.isfinite(guidance_scale) \
            or guidance_scale < 0:
        raise ValueError(f"guidance_scale={guidance_scale!r}; expected a finite number >= 0 (<= 1: no CFG)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed={seed!r}; expected an integer in [0, 2**32)")


def latent_shape(transformer_config, vae_config, batch: int, height: int, width: int,
                 frames: int) -> tuple[int, ...]:
    """(B, F', H', W', C) for a video of ``frames`` x ``height`` x ``width``; checks divisibility. Needs only the
    two components' configs, so a caller can check a request before loading any weights."""
    s, t = vae_factors(vae_config)
    ph, pw = transformer_config.patch[1:]
    if height % (s * ph) or width % (s * pw) or height <= 0 or width <= 0:
        hint = ""
        if transformer_config.sample_size in ASPECT_RATIO_BINS:
            hint = ("; or call the pipeline with use_resolution_binning=True to sample at the closest "
                    "aspect-ratio bin and resize to this size")
        raise ValueError(f"height={height}, width={width}: both must be positive multiples of {s * ph} "
                         f"(the VAE's spatial factor {s} x patch size {ph}){hint}")
    if frames < 1 or (frames - 1) % t:
        raise ValueError(f"frames={frames}: must be {t}k+1 for this VAE (e.g. {t * 20 + 1})")
    shape = (batch, (frames - 1) // t + 1, height // s, width // s, transformer_config.in_channels)
    grid = tuple(n // p for n, p in zip(shape[1:4], transformer_config.patch))
    limit = transformer_config.rope_max_seq_len
    for name, n, value in zip(("frames", "height", "width"), grid, (frames, height, width)):
        if n > limit:  # RoPE has no position past its table (diffusers fails on it too)
            raise ValueError(f"{name}={value}: {n} latent positions along it, more than this transformer's "
                             f"rope_max_seq_len={limit}")
    return shape


class SanaVideoPipeline:
    """Text-to-video and image-to-video sampling. Build with ``from_pretrained(folder)``."""

    def __init__(self, tokenizer, text_encoder: Component, transformer: Component, vae: Component, scheduler):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.vae_scale_spatial, self.vae_scale_temporal = vae.module.spatial_ratio, vae.module.temporal_ratio
        self.timings: dict[str, float] = {}
        self._progress = _StepProgress()
        self._streamer = BlockStreamer(self)
        # The loop's latents are donated: the sampled latents take the noise's buffer.
        self._denoise = _compile.jit(functools.partial(_denoise, transformer.module, self._progress),
                                     static_argnames=("schedule", "image_to_video", "cfg", "cfg_batched", "progress"),
                                     donate_argnums=(1,))
        self._decode = _compile.jit(functools.partial(_decode, vae.module), vae=True, static_argnames=("mode",))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32", quantize: str | None = None,
                        quantize_components=None, offload_text_encoder: bool = False,
                        **transformer_options):
        """A diffusers pipeline folder, or one written by ``python -m convert to-jax`` (same layout).

        ``dtype``: compute dtype of the text encoder, transformer and VAE ("float32" or "bfloat16").
        ``quantize``: "int8", "w8a8" or "fp8": the text encoder's and the transformer's linear layers compute
        quantized (`sana_jax.quantize`); the VAE stays in ``dtype``. ``quantize_components``: which of the two
        (None: both; ``("transformer",)``: the text encoder in ``dtype``). A folder saved quantized loads as it
        was saved.
        ``offload_text_encoder``: the text encoder's weights stay in host memory and go to the device only while
        prompts are encoded, so they are released before the denoising loop (`Component.to_host`; Gemma2-2B holds
        5.2 GB in bf16). Costs one host-to-device copy of them per encoded prompt batch.
        ``transformer_options`` go to the transformer's module; its layers run under ``nn.scan`` unless
        ``scan_layers=False``: compiled once rather than once per layer (half a 60-s demo stream's time on CPU).
        """
        path = os.fspath(path)
        index_path = os.path.join(path, "model_index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(f"{path}: not a pipeline folder (no model_index.json)")
        index = read_json(index_path)
        for name in COMPONENTS:
            if name not in index or not os.path.isdir(os.path.join(path, name)):
                raise ConfigError(f"{path}: component {name!r} is missing (model_index.json lists "
                                  f"{sorted(k for k in index if not k.startswith('_'))})")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype={dtype!r}; expected 'float32' or 'bfloat16'")
        from sana_jax.quantize import PIPELINE_COMPONENTS, check_components, check_mode

        components = check_components(quantize_components)
        if quantize is not None:
            check_mode(quantize)
        modes = {name: quantize if name in components else None for name in PIPELINE_COMPONENTS}
        tokenizer = load_tokenizer(os.path.join(path, "tokenizer"))
        text_encoder = load_component(os.path.join(path, "text_encoder"), dtype=dtype, quantize=modes["text_encoder"])
        if offload_text_encoder:
            text_encoder.to_host()   # before the transformer loads: the two never share the device
        transformer = load_component(os.path.join(path, "transformer"), dtype=dtype, quantize=modes["transformer"],
                                     **{"scan_layers": True, **transformer_options})
        vae = load_component(os.path.join(path, "vae"), dtype=dtype)
        scheduler = load_scheduler(os.path.join(path, "scheduler"))
        return cls(tokenizer, text_encoder, transformer, vae, scheduler)

    # ------------------------------------------------------------------------------------------------------------
    def encode_prompt(self, prompts, negative: bool = False, *, instruction=prompt_lib.COMPLEX_HUMAN_INSTRUCTION,
                      max_sequence_length: int = 300):
        """Prompts -> (embeds (B, L, D) float32, mask (B, L) int32), L = max_sequence_length.

        ``negative=True`` encodes without the instruction, as the pipeline does for negative prompts.
        """
        ids, mask, keep = prompt_lib.tokenize(self.tokenizer, prompts, instruction=None if negative else instruction,
                                              max_sequence_length=max_sequence_length)
        hidden = self.text_encoder(jnp.asarray(ids), jnp.asarray(mask))
        return hidden[:, keep].astype(jnp.float32), jnp.asarray(mask[:, keep])

    def latent_shape(self, batch: int, height: int, width: int, frames: int) -> tuple[int, ...]:
        """(B, F', H', W', C) for a video of ``frames`` x ``height`` x ``width``; checks divisibility."""
        return latent_shape(self.transformer.config, self.vae.config, batch, height, width, frames)

    def __call__(self, prompt, negative_prompt: str = "", height: int = 480, width: int = 832, frames: int = 81,
                 num_inference_steps: int = 50, guidance_scale: float = 6.0, seed: int = 0, image=None,
                 latents=None, output_type: str = "np", num_videos_per_prompt: int = 1,
                 motion_score: int | None = None, instruction=prompt_lib.COMPLEX_HUMAN_INSTRUCTION,
                 max_sequence_length: int = 300, use_resolution_binning: bool = False, progress: bool = False,
                 decode_frames: int = 0, cfg_batched: bool = True):
        """Samples videos. Returns uint8 (B, F, H, W, 3) for ``output_type="np"``, float32 latents for "latent".

        ``latents``: optional initial noise, channels-last (B, F', H', W', C) with B = prompts x
        num_videos_per_prompt. ``image``: PIL image / uint8 array / path -> image-to-video (it becomes latent frame
        0, which gets timestep 0 and is never updated). ``seed`` draws the noise when ``latents`` is None.
        ``use_resolution_binning``: sample at the closest aspect-ratio bin of the checkpoint's resolution (480p
        for sample_size 30, 720p for 22; ``latents`` and "latent" output have the bin's shape), then resize and
        centre-crop the decoded video to height x width. ``decode_frames`` = k > 0: the VAE decodes the latents k
        latent frames at a time through its carried causal state (``decode_chunk``; the same video, the activation
        memory of k frames, one compiled program per run shape); 0: the whole clip in one program.
        ``cfg_batched=False``: each step runs the negative and the positive branch of CFG as two transformer calls
        of B rows instead of one of 2B (the same video; half the denoising loop's activation memory).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}; expected one of {OUTPUT_TYPES}")
        check_sampling_args(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
        if num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt={num_videos_per_prompt}; expected >= 1")
        if isinstance(decode_frames, bool) or not isinstance(decode_frames, (int, np.integer)) or decode_frames < 0:
            raise ValueError(f"decode_frames={decode_frames!r}; expected an integer >= 0 (0: the whole clip at once)")
        if not isinstance(cfg_batched, bool):
            raise ValueError(f"cfg_batched={cfg_batched!r}; expected True or False")
        batch = len([prompt] if isinstance(prompt, str) else prompt) * num_videos_per_prompt
        out_size = (height, width)
        if use_resolution_binning:
            height, width = closest_bin(height, width, self.transformer.config.sample_size)
        shape = self.latent_shape(batch, height, width, frames)
        timings = {}

        start = time.perf_counter()
        cfg = guidance_scale > 1.0
        embeds, mask = self._conditioning(prompt, negative_prompt, cfg, num_videos_per_prompt, motion_score,
                                          instruction, max_sequence_length)
        timings["text encoder"] = _block(embeds, start)
        require_finite(embeds, "the text encoder")

        if latents is None:
            latents = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
        else:
            latents = jnp.array(latents, jnp.float32, copy=True)   # the loop donates it: never the caller's array
            if latents.shape != shape:
                raise ValueError(f"latents: expected shape {shape} (B, F', H', W', C) channels-last; "
                                 f"got {latents.shape}")
        if image is not None:
            start = time.perf_counter()
            latents = latents.at[:, :1].set(self._image_latents(image, height, width, batch))
            timings["image encode"] = _block(latents, start)
            require_finite(latents[:, :1], "the image encode (VAE encoder)")

        start = time.perf_counter()
        self._progress.start(num_inference_steps if progress else 0)
        latents, bad_step = self._denoise(self.transformer.params, latents, embeds, mask,
                                          jnp.float32(guidance_scale),
                                          schedule=self.scheduler.schedule(num_inference_steps),
                                          image_to_video=image is not None, cfg=cfg, cfg_batched=cfg_batched,
                                          progress=progress)
        timings["denoise"] = _block(latents, start)
        self._progress.close()
        if int(bad_step) >= 0:
            raise NonFiniteError(f"denoising step {int(bad_step) + 1} of {num_inference_steps}")
        if output_type == "latent":
            self.timings = timings
            return latents
        start = time.perf_counter()
        video = self.decode(latents, decode_frames)
        require_finite(video, "the VAE decode")
        if out_size != (height, width):
            video = resize_and_crop(video, *out_size)
        frames_u8 = np.asarray(to_uint8(video))
        timings["vae decode"] = time.perf_counter() - start
        self.timings = timings
        return frames_u8


    def decode(self, latents, decode_frames: int = 0):
        """Normalised latents (B, F', H', W', C) -> float video (B, F, H, W, 3) in the VAE's output range (see
        ``_decode``): the whole clip in one program (``decode_frames`` = 0), or runs of ``decode_frames`` latent
        frames through the VAE's carried state ("stream" runs; "last" for the final one, which flushes the frames
        a non-causal decoder holds back), concatenated."""
        vae = self.vae
        latents = latents.astype(vae.module.dtype)
        if not decode_frames or decode_frames >= latents.shape[1]:
            return self._decode(vae.params, latents, None, mode="whole")[0]
        check_streamable(vae.module)
        state, chunks = vae.module.init_stream_state(), []
        for start in range(0, latents.shape[1], decode_frames):
            last = start + decode_frames >= latents.shape[1]
            chunk, state = self._decode(vae.params, latents[:, start:start + decode_frames], state,
                                        mode="last" if last else "stream")
            chunks.append(chunk)
        return jnp.concatenate(chunks, axis=1)

    def _conditioning(self, prompt, negative_prompt, cfg, num_videos_per_prompt, motion_score, instruction,
                      max_sequence_length):
        """Text embeddings and masks for the batch: [negative; positive] stacked when ``cfg``, without the padding
        every row masks out (``prompts.drop_padding``)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [prompt_lib.with_motion_score(p, motion_score) for p in prompts]
        embeds, mask = self.encode_prompt(prompts, instruction=instruction, max_sequence_length=max_sequence_length)
        embeds, mask = (jnp.repeat(a, num_videos_per_prompt, axis=0) for a in (embeds, mask))
        if cfg:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
            if len(negatives) != len(prompts):
                raise ValueError(f"negative_prompt: {len(negatives)} given for {len(prompts)} prompts")
            neg, neg_mask = self.encode_prompt(negatives, negative=True, max_sequence_length=max_sequence_length)
            neg, neg_mask = (jnp.repeat(a, num_videos_per_prompt, axis=0) for a in (neg, neg_mask))
            embeds = jnp.concatenate([neg, embeds])
            mask = jnp.concatenate([neg_mask, mask])
        return prompt_lib.drop_padding(embeds, mask)

    def encode_video(self, video):
        """Video (B, F, H, W, 3) in [-1, 1] -> the VAE's normalised latents (its posterior mean): ``vae.encode``,
        which at top level compiles with the VAE options of ``sana_jax._compile`` like the pipeline's decode."""
        return self.vae.encode(jnp.asarray(video).astype(self.vae.module.dtype))

    def _image_latents(self, image, height, width, batch):
        """The conditioning image as normalised latents (batch, 1, H', W', C) (posterior mean)."""
        pixels = jnp.asarray(load_image(image, height, width))[None, None]
        image_latents = self.encode_video(pixels).astype(jnp.float32)
        return jnp.broadcast_to(image_latents, (batch,) + image_latents.shape[1:])

    def stream(self, prompt, negative_prompt: str = "", height: int = 480, width: int = 832, frames: int = 961,
               block_frames: int = 10, sampler: str = "few_step", num_inference_steps: int = 50,
               guidance_scale: float = 6.0, seed: int = 0, image=None, num_videos_per_prompt: int = 1,
               motion_score: int | None = None, instruction=prompt_lib.COMPLEX_HUMAN_INSTRUCTION,
               max_sequence_length: int = 300, decode_window: int = 0):
        """Long video block by block in constant memory: yields uint8 chunks (B, f, H, W, 3) as they are decoded.

        Blocks of ``block_frames`` latent frames (the first absorbs the remainder). ``sampler="few_step"``: the
        LongSANA schedule (t = 1000, 960, 889, 727 with re-noising; no CFG, for causal checkpoints);
        ``sampler="dpm"``: the folder's multistep scheduler with ``num_inference_steps`` and CFG (a state is carried
        per CFG branch). ``image``: the first frame (image-to-video). ``decode_window`` = c > 0: each block is
        decoded after the first latent frame and the c before it only, as a clip of the length a causal VAE was
        trained on (`BlockStreamer.run`); 0: the whole video as one causal sequence.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}; expected one of {SAMPLERS}")
        check_sampling_args(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
        check_streamable(self.vae.module)
        batch = len([prompt] if isinstance(prompt, str) else prompt) * num_videos_per_prompt
        shape = self.latent_shape(batch, height, width, frames)
        blocks = block_sizes(shape[1], block_frames)
        cfg = sampler == "dpm" and guidance_scale > 1.0
        embeds, mask = self._conditioning(prompt, negative_prompt, cfg, num_videos_per_prompt, motion_score,
                                          instruction, max_sequence_length)
        require_finite(embeds, "the text encoder")
        image_latents = None if image is None else self._image_latents(image, height, width, batch)
        if image_latents is not None:
            require_finite(image_latents, "the image encode (VAE encoder)")
        schedule = self.scheduler.schedule(num_inference_steps) if sampler == "dpm" else None
        for _, video in self._streamer.run(embeds, mask, latent_shape=shape, blocks=blocks, seed=seed,
                                        sampler=sampler, schedule=schedule, guidance_scale=guidance_scale,
                                        cfg=cfg, image_latents=image_latents, decode_window=decode_window):
            yield np.asarray(jax.device_get(video))


def _block(x, start):
    jax.block_until_ready(x)
    return time.perf_counter() - start


def _decode(vae_module, params, latents, state, *, mode):
    """One ``decode_chunk`` run: normalised latents (B, f, H', W', C) -> (video (B, F, H, W, 3), the state for the
    next run), in range as diffusers' VAE returns it (the Wan VAE clamps to [-1, 1], diffusers' LTX-2 VAE does
    not: the uint8 conversion clips later), which matters where resolution binning resizes in between. Each VAE's
    ``decode_chunk`` says which."""
    video, state = vae_module.apply({"params": params}, latents, state, mode, method="decode_chunk")
    return video, (None if mode == "whole" else state)


def _denoise(module, step_hook, params, latents, embeds, mask, guidance_scale, *, schedule,
             image_to_video: bool, cfg: bool, progress: bool, cfg_batched: bool = True):
    """All denoising steps in one program (``denoise.multistep``). latents (B, F', H', W', C) fp32; embeds (B or
    2B, L, D). Returns (latents, the first step whose latents hold NaN/inf, or -1).

    ``schedule`` (static, hashable by config and step count) holds the timestep/sigma tables and the update rule.
    """
    return denoise.multistep(module, params, latents, embeds, mask, guidance_scale, schedule=schedule, cfg=cfg,
                             pin=image_to_video, on_step=step_hook.update if progress else None,
                             cfg_batched=cfg_batched)


class _StepProgress:
    """A tqdm bar over denoising steps, advanced by a host callback from inside the compiled loop. The compiled
    program holds this object, so each call opens a fresh bar here rather than in the trace."""

    def __init__(self):
        self.bar = None

    def start(self, total: int):
        if total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="denoising", unit="step")

    def update(self, i):
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
