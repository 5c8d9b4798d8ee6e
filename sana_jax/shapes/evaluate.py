"""Does a sampled video show what its shapes-world caption says? Accuracy per attribute over a model's samples.

Scores built on the detector (`sana_jax.shapes.detect`), and the evaluation CLI: sample every caption of the chosen
splits from a model, read each video back, and print the accuracy per attribute (plus long-video lines).

    python -m sana_jax.shapes.evaluate --split held_out,train --videos-per-caption 2
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from sana_jax.shapes import world
from sana_jax.shapes.detect import detect

WINDOW = world.FRAMES      # frames per scored window of a long video


ATTRIBUTES = ("colour", "shape", "direction")


def split_of(combination: tuple[str, str, str]) -> str:
    return "held_out" if combination in world.HELD_OUT else "train"


def score_windows(video: np.ndarray, caption: str, window: int = WINDOW) -> dict:
    """A long uint8 video (F, H, W, 3) against its caption: the fraction of frames with the object present, and over
    consecutive non-overlapping ``window``-frame windows (a short tail is dropped) the fraction whose detected
    colour, shape, direction, and all three, match the caption."""
    truth = dict(zip(ATTRIBUTES, world.parse_caption(caption)))
    windows = [detect(video[i:i + window]) for i in range(0, len(video) - window + 1, window)]
    report = {"caption": caption, "frames": int(len(video)), "windows": len(windows),
              "present": float(np.mean(detect(video).present)) if len(video) else 0.0}
    for name in ATTRIBUTES:
        report[name] = float(np.mean([getattr(d, name) == truth[name] for d in windows])) if windows else 0.0
    report["all"] = float(np.mean([all(getattr(d, a) == truth[a] for a in ATTRIBUTES) for d in windows])) \
        if windows else 0.0
    return report


def _sample(pipe, prompts, *, seed, stream, sample_kwargs) -> np.ndarray:
    """uint8 (B, F, H, W, 3) from the pipeline: one call, or the stream's chunks joined along time."""
    if stream:
        return np.concatenate(list(pipe.stream(prompts, seed=seed, **sample_kwargs)), axis=1)
    call_kwargs = {k: v for k, v in sample_kwargs.items() if k not in ("block_frames", "sampler")}
    return np.asarray(pipe(prompts, seed=seed, **call_kwargs))


def evaluate(pipe, captions, *, videos_per_caption: int, seed: int, batch_size: int = 8, stream: bool = False,
             progress: bool = False, **sample_kwargs) -> dict:
    """Samples ``videos_per_caption`` videos per caption (``batch_size`` per pipeline call, seed ``seed + b`` for
    batch b) and scores each against `parse_caption`.

    ``stream``: sample with ``pipe.stream`` (block by block) instead of ``pipe(...)``. ``sample_kwargs`` go to the
    pipeline (height, width, frames, num_inference_steps, guidance_scale; block_frames and sampler for streams).
    Returns {"splits": {split: {attribute or "all": {"accuracy", "correct", "videos"}}}, "videos": [per video:
    caption, split, seed, detected (colour, shape, direction), correct {attribute: bool}]}.
    """
    from tqdm.auto import tqdm

    if videos_per_caption < 1 or batch_size < 1:
        raise ValueError(f"videos_per_caption={videos_per_caption}, batch_size={batch_size}: expected >= 1")
    prompts = [c for c in captions for _ in range(videos_per_caption)]
    for c in captions:
        world.parse_caption(c)      # a bad caption fails before any sampling
    videos = []
    batches = range(0, len(prompts), batch_size)
    for b, start in enumerate(tqdm(batches, desc="batches", disable=not progress)):
        batch = prompts[start:start + batch_size]
        samples = _sample(pipe, batch, seed=seed + b, stream=stream, sample_kwargs=sample_kwargs)
        for prompt, video in zip(batch, samples):
            truth = world.parse_caption(prompt)
            found = detect(video)
            detected = (found.colour, found.shape, found.direction)
            videos.append({"caption": prompt, "split": split_of(truth), "seed": seed + b, "detected": detected,
                           "correct": {a: d == t for a, d, t in zip(ATTRIBUTES, detected, truth)}})
    splits = {}
    for split in world.SPLITS:
        rows = [v for v in videos if v["split"] == split]
        if not rows:
            continue
        splits[split] = {}
        for name in (*ATTRIBUTES, "all"):
            correct = sum(all(v["correct"].values()) if name == "all" else v["correct"][name] for v in rows)
            splits[split][name] = {"accuracy": correct / len(rows), "correct": correct, "videos": len(rows)}
    return {"splits": splits, "videos": videos}


def long_frames(seconds: float, fps: float, temporal_factor: int = 4) -> int:
    """The smallest ``temporal_factor`` k + 1 frame count covering ``seconds`` at ``fps``."""
    need = max(1, math.ceil(seconds * fps - 1e-9))
    return 1 + temporal_factor * math.ceil((need - 1) / temporal_factor)


def evaluate_long(pipe, caption: str, *, seconds: float, fps: float, seed: int, **stream_kwargs) -> dict:
    """One long video streamed block by block (``pipe.stream``), scored by `score_windows`. ``stream_kwargs``:
    height, width, block_frames, sampler, num_inference_steps, guidance_scale."""
    world.parse_caption(caption)
    frames = long_frames(seconds, fps)
    chunks = list(pipe.stream(caption, frames=frames, seed=seed, **stream_kwargs))
    video = np.concatenate(chunks, axis=1)[0]
    return {**score_windows(video, caption), "seconds": frames / fps}


# ---------------------------------------------------------------------------------------------------- CLI

def format_table(report: dict) -> str:
    names = {"colour": "colour", "shape": "shape", "direction": "direction", "all": "all three"}
    lines = ["| split | attribute | accuracy | videos scored |", "|---|---|---|---|"]
    for split, scores in report["splits"].items():
        for key, label in names.items():
            lines.append(f"| {split} | {label} | {scores[key]['accuracy']:.3f} | {scores[key]['videos']} |")
    return "\n".join(lines)


def format_long(report: dict) -> str:
    return (f"long video {report['caption']!r}: {report['frames']} frames ({report['seconds']:.1f} s), object present "
            f"in {report['present']:.1%} of frames; over {report['windows']} windows of {WINDOW} frames: direction "
            f"{report['direction']:.1%}, colour {report['colour']:.1%}, shape {report['shape']:.1%}, "
            f"all three {report['all']:.1%}")


def main(argv: list[str] | None = None) -> int:
    from sana_jax._cli import float_arg, positive_int_arg, seed_arg
    from sana_jax.shapes import DEMO_MODEL

    parser = argparse.ArgumentParser(prog="python -m sana_jax.shapes.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEMO_MODEL, help="model folder (default: the demo shapes model)")
    parser.add_argument("--split", default="held_out,train", help="comma-separated splits to score")
    parser.add_argument("--videos-per-caption", type=positive_int_arg, default=2)
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--batch-size", type=positive_int_arg, default=8, help="captions per pipeline call")
    for flag, kind in (("steps", positive_int_arg), ("guidance", float_arg(0)), ("height", positive_int_arg),
                       ("width", positive_int_arg), ("frames", positive_int_arg), ("fps", positive_int_arg),
                       ("block-frames", positive_int_arg)):
        parser.add_argument(f"--{flag}", type=kind, default=None, help="default: the model's sample_defaults.json")
    parser.add_argument("--sampler", default=None, help="stream sampler; default: the model's sample_defaults.json")
    parser.add_argument("--long-seconds", type=float_arg(0), default=30.0,
                        help="long-video length; 0 skips the check")
    parser.add_argument("--long-captions", type=positive_int_arg, default=1, help="captions given a long video")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    for s in splits:
        if s not in world.SPLITS:
            parser.error(f"--split {s!r}: expected some of {sorted(world.SPLITS)}")
    from sana_jax import _cli

    return _cli.run(lambda: _evaluate_cli(args, splits), interrupted="stopped before the table")


def _evaluate_cli(args, splits) -> int:
    from sana_jax.pipeline.sample import check_request, merge_defaults

    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model {args.model}: no such folder")
    defaults = merge_defaults(args.model, steps=args.steps, guidance=args.guidance, height=args.height,
                              width=args.width, frames=args.frames, fps=args.fps, block_frames=args.block_frames,
                              sampler=args.sampler)
    common = {"height": defaults["height"], "width": defaults["width"],
              "num_inference_steps": defaults["steps"], "guidance_scale": defaults["guidance"]}
    stream_only = {k: defaults[k] for k in ("block_frames", "sampler") if k in defaults}
    stream = bool(defaults.get("stream", False))
    check_request(args.model, stream, {**common, "frames": defaults["frames"], "seed": args.seed,
                                       **(stream_only if stream else {})})

    from sana_jax import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(args.model, dtype=args.dtype)
    captions = [world.caption(*c) for s in splits for c in world.SPLITS[s]]
    report = evaluate(pipe, captions, videos_per_caption=args.videos_per_caption, seed=args.seed,
                      batch_size=args.batch_size, stream=stream, progress=True, frames=defaults["frames"],
                      **common, **(stream_only if stream else {}))
    print(format_table(report))
    if args.long_seconds > 0:
        for i, caption in enumerate(captions[:args.long_captions]):
            long = evaluate_long(pipe, caption, seconds=args.long_seconds, fps=defaults["fps"], seed=args.seed + i,
                                 **common, **stream_only)
            print(format_long(long))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
