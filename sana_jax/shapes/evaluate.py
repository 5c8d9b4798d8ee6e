"""Does a sampled video show what its shapes-world caption says? Accuracy per attribute over a model's samples.

Scores built on the detector (`sana_jax.shapes.detect`), and the evaluation CLI: sample every caption of the chosen
splits from a model, read each video back, and print the accuracy per attribute, then stream long videos for
captions alternating between held-out and seen combinations and print their per-window scores and a summary table.
``--sheet`` writes a contact sheet (PNG) of the held-out samples and the long videos, ``--json`` the whole report.

    python -m sana_jax.shapes.evaluate --split held_out,train --videos-per-caption 2 --long-captions 12 \
        --sheet shapes_sheet.png --json shapes_report.json
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from sana_jax.pipeline.sample import STREAM_ONLY
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
    call_kwargs = {k: v for k, v in sample_kwargs.items() if k not in STREAM_ONLY}
    return np.asarray(pipe(prompts, seed=seed, **call_kwargs))


def evaluate(pipe, captions, *, videos_per_caption: int, seed: int, batch_size: int = 8, stream: bool = False,
             progress: bool = False, keep_first_videos: bool = False, **sample_kwargs) -> dict:
    """Samples ``videos_per_caption`` videos per caption (``batch_size`` per pipeline call, seed ``seed + b`` for
    batch b) and scores each against `parse_caption`.

    ``stream``: sample with ``pipe.stream`` (block by block) instead of ``pipe(...)``. ``sample_kwargs`` go to the
    pipeline (height, width, frames, num_inference_steps, guidance_scale; block_frames and sampler for streams).
    Returns {"splits": {split: {attribute or "all": {"accuracy", "correct", "videos"}}}, "videos": [per video:
    caption, split, seed, detected (colour, shape, direction), correct {attribute: bool}]}, plus with
    ``keep_first_videos`` "first_videos": {caption: the first uint8 (F, H, W, 3) video scored for it} (for a
    contact sheet; off by default so the samples are not held in memory).
    """
    from tqdm.auto import tqdm

    if videos_per_caption < 1 or batch_size < 1:
        raise ValueError(f"videos_per_caption={videos_per_caption}, batch_size={batch_size}: expected >= 1")
    prompts = [c for c in captions for _ in range(videos_per_caption)]
    for c in captions:
        world.parse_caption(c)      # a bad caption fails before any sampling
    videos, first_videos = [], {}
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
            if keep_first_videos and prompt not in first_videos:
                first_videos[prompt] = np.array(video, dtype=np.uint8)
    splits = {}
    for split in world.SPLITS:
        rows = [v for v in videos if v["split"] == split]
        if not rows:
            continue
        splits[split] = {}
        for name in (*ATTRIBUTES, "all"):
            correct = sum(all(v["correct"].values()) if name == "all" else v["correct"][name] for v in rows)
            splits[split][name] = {"accuracy": correct / len(rows), "correct": correct, "videos": len(rows)}
    report = {"splits": splits, "videos": videos}
    if keep_first_videos:
        report["first_videos"] = first_videos
    return report


def long_frames(seconds: float, fps: float, temporal_factor: int = 4) -> int:
    """The smallest ``temporal_factor`` k + 1 frame count covering ``seconds`` at ``fps``."""
    need = max(1, math.ceil(seconds * fps - 1e-9))
    return 1 + temporal_factor * math.ceil((need - 1) / temporal_factor)


def evaluate_long(pipe, caption: str, *, seconds: float, fps: float, seed: int, keep_video: bool = False,
                  **stream_kwargs) -> dict:
    """One long video streamed block by block (``pipe.stream``), scored by `score_windows`. ``stream_kwargs``:
    height, width, block_frames, sampler, num_inference_steps, guidance_scale. ``keep_video``: the report also
    holds the uint8 (F, H, W, 3) video under "video"."""
    world.parse_caption(caption)
    frames = long_frames(seconds, fps)
    chunks = list(pipe.stream(caption, frames=frames, seed=seed, **stream_kwargs))
    video = np.concatenate(chunks, axis=1)[0]
    report = {**score_windows(video, caption), "seconds": frames / fps}
    if keep_video:
        report["video"] = np.asarray(video, np.uint8)
    return report


def long_captions(n: int) -> list[str]:
    """``n`` captions for long videos, alternating held-out and seen combinations in their fixed order
    (``HELD_OUT[0], TRAIN[0], HELD_OUT[1], TRAIN[1], ...``; past the 12 held-out ones, the rest of ``TRAIN``):
    ``n = 12`` covers 6 of each."""
    total = len(world.HELD_OUT) + len(world.TRAIN)
    if not (isinstance(n, int) and 1 <= n <= total):
        raise ValueError(f"n={n!r}: expected an int in [1, {total}] (one long video per distinct combination)")
    held, train = list(world.HELD_OUT), list(world.TRAIN)
    order = []
    while held or train:
        for split in (held, train):
            if split:
                order.append(split.pop(0))
    return [world.caption(*c) for c in order[:n]]


# ---------------------------------------------------------------------------------------------------- contact sheet

SHEET_PAD = 4      # pixels around the sheet and between a label and its row's first frame
SHEET_GAP = 2      # pixels between frames of a row and between rows
SHEET_BACKGROUND = (255, 255, 255)
SHEET_TEXT = (0, 0, 0)


def sheet_indices(frames: int, frames_per_row: int) -> np.ndarray:
    """Evenly spaced frame indices over ``0 .. frames - 1``, first and last included (fewer when the video is
    shorter than ``frames_per_row``)."""
    return np.round(np.linspace(0, frames - 1, min(frames, frames_per_row))).astype(int)   # step >= 1: distinct


def contact_sheet(rows: list[tuple[str, np.ndarray]], path: str | os.PathLike, *, frames_per_row: int = 9,
                  scale: int = 2) -> None:
    """Writes a PNG (atomically) of labelled strips: per row, its label at the left, then ``frames_per_row`` frames
    of its uint8 video (F, H, W, 3) at `sheet_indices`, each upscaled ``scale`` x (nearest neighbour).

    Layout: the label column is as wide as the widest label plus `SHEET_PAD` on each side; frames follow
    `SHEET_GAP` apart; a row is as tall as its frames or its label, whichever is taller; rows are `SHEET_GAP`
    apart; `SHEET_PAD` surrounds the whole.
    """
    from PIL import Image, ImageDraw, ImageFont

    from sana_jax._io import atomic_file

    if not isinstance(frames_per_row, int) or isinstance(frames_per_row, bool) or frames_per_row < 1:
        raise ValueError(f"frames_per_row={frames_per_row!r}: expected an int >= 1")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale={scale!r}: expected an int >= 1")
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"rows: expected a non-empty list of (label, video) pairs, got {rows!r:.80}")
    for i, row in enumerate(rows):
        if not (isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str)):
            raise ValueError(f"rows[{i}]: expected a (label, video) pair, got {type(row).__name__}")
        video = row[1]
        if not (isinstance(video, np.ndarray) and video.dtype == np.uint8 and video.ndim == 4
                and video.shape[-1] == 3 and min(video.shape) > 0):
            shape = getattr(video, "shape", None)
            raise ValueError(f"rows[{i}] ({row[0]!r}): expected a uint8 video (F, H, W, 3) with F, H, W >= 1, got "
                             f"{type(video).__name__} {getattr(video, 'dtype', '')} {shape}")

    font = ImageFont.load_default()
    boxes = [font.getbbox(label) for label, _ in rows]
    label_width = max(int(math.ceil(b[2])) for b in boxes) + 2 * SHEET_PAD
    strips = []
    for label, video in rows:
        frames = [np.repeat(np.repeat(video[i], scale, axis=0), scale, axis=1)
                  for i in sheet_indices(len(video), frames_per_row)]
        h, w = frames[0].shape[:2]
        strips.append((frames, w, max(h, int(math.ceil(font.getbbox(label)[3])))))
    width = label_width + max(len(f) * w + (len(f) - 1) * SHEET_GAP for f, w, _ in strips) + SHEET_PAD
    height = 2 * SHEET_PAD + sum(h for *_, h in strips) + (len(strips) - 1) * SHEET_GAP
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    top = SHEET_PAD
    for (label, _), (frames, w, row_height) in zip(rows, strips):
        text_height = font.getbbox(label)[3]
        draw.text((SHEET_PAD, top + (row_height - text_height) // 2), label, fill=SHEET_TEXT, font=font)
        for j, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (label_width + j * (w + SHEET_GAP), top))
        top += row_height + SHEET_GAP
    with atomic_file(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")


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


def format_long_summary(reports: list[dict]) -> str:
    """One markdown row per long video (fractions as percentages), then the minimum over prompts of each of
    present / colour / shape / direction."""
    lines = ["| caption | split | frames | present | colour | shape | direction | all three |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        split = split_of(world.parse_caption(r["caption"]))
        lines.append(f"| {r['caption']} | {split} | {r['frames']} | {r['present']:.1%} | {r['colour']:.1%} | "
                     f"{r['shape']:.1%} | {r['direction']:.1%} | {r['all']:.1%} |")
    lowest = ", ".join(f"{k} {min(r[k] for r in reports):.1%}" for k in ("present", *ATTRIBUTES))
    lines.append(f"minimum over {len(reports)} prompts: {lowest}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sana_jax._cli import add_quantize_arguments, float_arg, positive_int_arg, seed_arg
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
    parser.add_argument("--long-captions", type=positive_int_arg, default=1,
                        help="captions given a long video, alternating held-out and seen combinations")
    parser.add_argument("--sheet", default=None, metavar="PATH.png",
                        help="write a contact sheet: one row per held-out caption's first sample, one per long video")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the whole report as JSON")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_quantize_arguments(parser)
    args = parser.parse_args(argv)

    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    for s in splits:
        if s not in world.SPLITS:
            parser.error(f"--split {s!r}: expected some of {sorted(world.SPLITS)}")
    from sana_jax import _cli

    return _cli.run(lambda: _evaluate_cli(args, splits), interrupted="stopped before the table")


def _check_output(flag: str, path: str | None, suffix: str | None = None) -> None:
    if path is None:
        return
    if suffix and not path.lower().endswith(suffix):
        raise ValueError(f"{flag} {path}: expected a {suffix} file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag} {path}: no such folder {folder}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{flag} {path}: is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{flag} {path}: folder {folder} is not writable")


def _evaluate_cli(args, splits) -> int:
    from sana_jax.pipeline.sample import check_request, merge_defaults

    _check_output("--sheet", args.sheet, ".png")
    _check_output("--json", args.json)
    if args.sheet and "held_out" not in splits and args.long_seconds == 0:
        raise ValueError(f"--sheet {args.sheet}: nothing to show (no held_out split and --long-seconds 0)")
    if args.long_captions > len(world.all_combinations()):
        raise ValueError(f"--long-captions {args.long_captions}: at most {len(world.all_combinations())} (one long "
                         f"video per distinct combination)")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model {args.model}: no such folder")
    defaults = merge_defaults(args.model, steps=args.steps, guidance=args.guidance, height=args.height,
                              width=args.width, frames=args.frames, fps=args.fps, block_frames=args.block_frames,
                              sampler=args.sampler)
    common = {"height": defaults["height"], "width": defaults["width"],
              "num_inference_steps": defaults["steps"], "guidance_scale": defaults["guidance"]}
    stream_only = {k: defaults[k] for k in STREAM_ONLY if k in defaults}
    stream = bool(defaults.get("stream", False))
    check_request(args.model, stream, {**common, "frames": defaults["frames"], "seed": args.seed,
                                       **(stream_only if stream else {})})

    from sana_jax import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(args.model, dtype=args.dtype, quantize=args.quantize,
                                             quantize_components=args.quantize_components)
    captions = [world.caption(*c) for s in splits for c in world.SPLITS[s]]
    sheet = args.sheet is not None
    report = evaluate(pipe, captions, videos_per_caption=args.videos_per_caption, seed=args.seed,
                      batch_size=args.batch_size, stream=stream, progress=True, keep_first_videos=sheet,
                      frames=defaults["frames"], **common, **(stream_only if stream else {}))
    print(format_table(report))
    rows = [(caption, video) for caption, video in report.pop("first_videos", {}).items()
            if split_of(world.parse_caption(caption)) == "held_out"]
    longs = []
    if args.long_seconds > 0:
        for i, caption in enumerate(long_captions(args.long_captions)):
            long = evaluate_long(pipe, caption, seconds=args.long_seconds, fps=defaults["fps"], seed=args.seed + i,
                                 keep_video=sheet, **common, **stream_only)
            if sheet:
                rows.append((f"{caption}, {long['seconds']:.1f} s", long.pop("video")))
            print(format_long(long))
            longs.append(long)
        print(format_long_summary(longs))
    if sheet:
        contact_sheet(rows, args.sheet)
        print(f"contact sheet written to {args.sheet}")
    if args.json:
        from sana_jax._io import atomic_write_text

        record = {"model": args.model, "seed": args.seed,
                  "settings": {**defaults, "dtype": args.dtype, "quantize": args.quantize,
                                 "quantize_components": args.quantize_components if args.quantize else None},
                  "videos_per_caption": args.videos_per_caption, **report, "long": longs}
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
