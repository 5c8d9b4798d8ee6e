"""Prompt -> mp4 on disk, the library function behind ``sample.py``."""

from __future__ import annotations

import json
import os
import time

from sana_jax.pipeline.video_io import Mp4Writer, write_mp4
from sana_jax.shapes import DEMO_MODEL  # noqa: F401  (sample.py's default model)

# The published SANA-Video sampling defaults, used where a model folder declares none.
PUBLISHED_DEFAULTS = {"height": 480, "width": 832, "frames": 81, "steps": 50, "guidance": 6.0, "fps": 16}
SAMPLE_DEFAULTS_FILE = "sample_defaults.json"
_DEFAULT_KEYS = {"height": int, "width": int, "frames": int, "steps": int, "guidance": float, "fps": int,
                 "stream": bool, "block_frames": int, "sampler": str, "decode_window": int}
STREAM_ONLY = ("block_frames", "sampler", "decode_window")  # settings of SanaVideoPipeline.stream alone


def read_sample_defaults(model: str) -> dict:
    """The model folder's native sampling settings (``sample_defaults.json``: any of height, width, frames, steps,
    guidance, fps, stream, block_frames, sampler, decode_window) over the published defaults. Unknown keys or
    wrong types are an error naming the file and key."""
    defaults = dict(PUBLISHED_DEFAULTS)
    path = os.path.join(model, SAMPLE_DEFAULTS_FILE)
    if not os.path.isfile(path):
        return defaults
    with open(path) as f:
        declared = json.load(f)
    if not isinstance(declared, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key, value in declared.items():
        if key not in _DEFAULT_KEYS:
            raise ValueError(f"{path}: unknown key {key!r}; expected some of {sorted(_DEFAULT_KEYS)}")
        kind = _DEFAULT_KEYS[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else \
            isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{path}: {key}={value!r}; expected a {kind.__name__}")
        defaults[key] = kind(value)
    return defaults


def merge_defaults(model: str, **flags) -> dict:
    """`read_sample_defaults` of ``model`` with every flag that was given (not None) on top: what a command line
    samples with. ``flags`` are keys of sample_defaults.json (steps=, guidance=, block_frames=, ...)."""
    unknown = sorted(set(flags) - set(_DEFAULT_KEYS))
    if unknown:
        raise TypeError(f"merge_defaults: unknown settings {unknown}; expected some of {sorted(_DEFAULT_KEYS)}")
    merged = read_sample_defaults(model)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged


def check_output_path(out: str) -> None:
    """Fails early (before any model work) when ``out`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(out)) or "."
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out {out}: is a directory; expected a .mp4 file path")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--out {out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"--out {out}: directory {directory} is not writable")
    if not out.endswith(".mp4"):
        raise ValueError(f"--out {out}: expected a path ending in .mp4")


def check_request(model: str, stream: bool | None, call_kwargs: dict) -> bool:
    """Every check of a sampling request that needs only the folder's configs, so that a bad size, frame count,
    block size or argument fails before any weights are loaded. Returns whether it streams (None: block-causal
    checkpoints do)."""
    import inspect

    from sana_jax.components import load_config
    from sana_jax.pipeline.sana_video import SanaVideoPipeline, check_sampling_args, latent_shape
    from sana_jax.pipeline.stream import SAMPLERS, block_sizes

    transformer = load_config(os.path.join(model, "transformer"))
    if stream is None:
        stream = transformer.class_name == "SanaVideoCausalTransformer3DModel"
    method = SanaVideoPipeline.stream if stream else SanaVideoPipeline.__call__
    args = {name: p.default for name, p in inspect.signature(method).parameters.items()
            if p.default is not inspect.Parameter.empty}
    unknown = sorted(set(call_kwargs) - set(args) - (set() if stream else set(STREAM_ONLY)))
    if unknown:  # (the stream settings sample_defaults.json may hold are dropped when not streaming)
        raise ValueError(f"{', '.join(unknown)}: not an argument of SanaVideoPipeline.{method.__name__} "
                         f"(stream={stream}); expected some of {sorted(args)}")
    args.update(call_kwargs)
    check_sampling_args(num_inference_steps=args["num_inference_steps"], guidance_scale=args["guidance_scale"],
                        seed=args["seed"])
    shape = latent_shape(transformer, load_config(os.path.join(model, "vae")), 1, args["height"], args["width"],
                         args["frames"])
    if stream:
        block_sizes(shape[1], args["block_frames"])
        if args["sampler"] not in SAMPLERS:
            raise ValueError(f"sampler={args['sampler']!r}; expected one of {SAMPLERS}")
        if args["decode_window"] < 0:
            raise ValueError(f"decode_window={args['decode_window']}; expected >= 0 (0: one causal decode)")
    return stream


def sample_to_file(model: str, prompt: str, out: str, *, image: str | None = None, fps: int = 16,
                   dtype: str = "float32", quantize: str | None = None,
                   quantize_components=None, offload_text_encoder: bool = False,
                   stream: bool | None = None, log=print, **call_kwargs) -> str:
    """Loads the pipeline at ``model``, samples one video and writes it to ``out`` (H.264 mp4 at ``fps``).

    ``stream=True`` (None picks it for block-causal checkpoints): long video block by block
    (``SanaVideoPipeline.stream``), each chunk appended to the mp4 as it is decoded, so no step holds the whole
    video. ``quantize``, ``quantize_components``, ``offload_text_encoder``: see
    `SanaVideoPipeline.from_pretrained`. ``call_kwargs`` go to the pipeline call; they are checked against the
    folder's configs before any weights load.
    """
    from sana_jax.pipeline.sana_video import SanaVideoPipeline

    check_output_path(out)
    if image is not None and not os.path.isfile(image):
        raise FileNotFoundError(f"--image {image}: no such file")
    if fps < 1:
        raise ValueError(f"--fps {fps}: expected >= 1")
    stream = check_request(model, stream, call_kwargs)
    start = time.perf_counter()
    pipe = SanaVideoPipeline.from_pretrained(model, dtype=dtype, quantize=quantize,
                                             quantize_components=quantize_components,
                                             offload_text_encoder=offload_text_encoder)
    log(f"loaded {model} in {time.perf_counter() - start:.1f} s")
    stream_only = {k: call_kwargs.pop(k) for k in STREAM_ONLY if k in call_kwargs}
    if stream:
        return _stream_to_file(pipe, prompt, out, image=image, fps=fps, log=log, **call_kwargs, **stream_only)
    frames = pipe(prompt, image=image, progress=True, **call_kwargs)
    for stage, seconds in pipe.timings.items():
        log(f"{stage}: {seconds:.1f} s")
    start = time.perf_counter()
    write_mp4(out, frames[0], fps=fps)
    log(f"wrote {os.path.abspath(out)} ({frames.shape[1]} frames, {frames.shape[3]}x{frames.shape[2]}, {fps} fps) "
        f"in {time.perf_counter() - start:.1f} s")
    return out


def _stream_to_file(pipe, prompt, out, *, image, fps, log, **call_kwargs):
    from tqdm.auto import tqdm

    start = time.perf_counter()
    with Mp4Writer(out, fps) as writer, tqdm(total=call_kwargs.get("frames"), desc="frames", unit="frame") as bar:
        for chunk in pipe.stream(prompt, image=image, **call_kwargs):
            writer.append(chunk[0])
            bar.update(chunk.shape[1])
    log(f"wrote {os.path.abspath(out)} ({writer.frames} frames, {fps} fps) in {time.perf_counter() - start:.1f} s "
        f"(streamed block by block)")
    return out
