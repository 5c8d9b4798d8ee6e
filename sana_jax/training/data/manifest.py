"""Videos and images listed in a JSONL manifest, decoded with PyAV to fixed-size float clips.

Manifest: one JSON object per line, ``{"video": PATH, "caption": TEXT}`` or ``{"image": PATH, "caption": TEXT}``;
a relative PATH is relative to the manifest's folder. Blank lines are ignored.

Decoding a video entry to ``frames`` frames at ``fps``:
  * time: target k (k = 0..frames-1) is at t_k = k / fps after the first frame; it takes the source frame whose
    timestamp is nearest (the earlier one on a tie). A clip whose last frame is more than half a source frame
    period before t_{frames-1} is too short and is unusable.
  * space: resized (PIL bicubic) by the one scale that makes the short side cover the target, keeping the aspect
    ratio, then centre-cropped to (height, width).
  * values: float32 (frames, height, width, 3) in [-1, 1] in a batch; examples stay uint8 until ``collate``
    (a quarter of the memory in prefetch buffers and between worker processes).
An image entry is a 1-frame clip and is only usable when ``frames == 1``: a batch has one shape, and an image is
not silently repeated to make a video. Unusable, missing and corrupt files come back as ``Unreadable``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from fractions import Fraction

import numpy as np

from sana_jax.training.data.unreadable import Unreadable, describe


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    kind: str         # "video" | "image"
    path: str         # absolute
    caption: str
    line: int         # 1-based line in the manifest, for messages

    def __str__(self) -> str:
        return f"{self.path} (manifest line {self.line})"


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """The entries of a JSONL manifest; a malformed line is an error naming the file and line."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: manifest not found")
    root = os.path.dirname(path)
    entries = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not a JSON object ({e})") from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(item).__name__}")
            kinds = [k for k in ("video", "image") if k in item]
            if len(kinds) != 1 or not isinstance(item[kinds[0]], str):
                raise ValueError(f"{path}:{line_no}: expected exactly one of \"video\" or \"image\" with a path")
            if not isinstance(item.get("caption"), str):
                raise ValueError(f"{path}:{line_no}: expected a string \"caption\"")
            media = os.path.join(root, item[kinds[0]])     # an absolute media path stays as it is
            entries.append(ManifestEntry(kinds[0], os.path.normpath(media), item["caption"], line_no))
    if not entries:
        raise ValueError(f"{path}: the manifest lists no entries")
    return entries


class ClipDecoder:
    """A media file -> uint8 (frames, height, width, 3); raises ``ValueError`` for an unusable one."""

    def __init__(self, *, height: int, width: int, frames: int, fps: float):
        self.height, self.width, self.frames = height, width, frames
        self.fps = Fraction(fps).limit_denominator(1_000_000)

    def __call__(self, entry: ManifestEntry) -> np.ndarray:
        if entry.kind == "image":
            if self.frames != 1:
                raise ValueError(f"an image entry gives 1 frame; this data set is configured for frames="
                                 f"{self.frames} (images are only usable when frames == 1)")
            return self._decode_image(entry.path)
        return self._decode_video(entry.path)

    def _decode_image(self, path: str) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        return self._resize_crop(rgb)[None]

    def _decode_video(self, path: str) -> np.ndarray:
        import av

        targets = [k / self.fps for k in range(self.frames)]
        picked = []
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            period = Fraction(1) / Fraction(rate) if rate else None
            t0 = prev = prev_t = None
            for i, frame in enumerate(container.decode(stream)):
                if frame.pts is not None:
                    t = Fraction(frame.pts) * Fraction(frame.time_base)
                elif period is not None:
                    t = i * period
                else:
                    raise ValueError("frames without timestamps and no frame rate")
                t0 = t if t0 is None else t0
                t -= t0
                while len(picked) < self.frames and t >= targets[len(picked)]:
                    target = targets[len(picked)]
                    nearest_is_prev = prev is not None and target - prev_t <= t - target
                    picked.append(self._to_rgb(prev if nearest_is_prev else frame))
                if len(picked) == self.frames:
                    break
                prev, prev_t = frame, t
            if prev is None and not picked:
                raise ValueError("no decodable frames")
            # Targets past the last frame still take it while it is the nearest frame (within half a period).
            half = period / 2 if period is not None else Fraction(0)
            while len(picked) < self.frames and targets[len(picked)] - prev_t <= half:
                picked.append(self._to_rgb(prev))
        if len(picked) < self.frames:
            raise ValueError(f"too short: {self.frames} frames at {float(self.fps):g} fps need "
                             f"{float(targets[-1]):.3f} s after the first frame; the clip's last frame is at "
                             f"{float(prev_t):.3f} s")
        return np.stack(picked)

    def _to_rgb(self, frame) -> np.ndarray:
        return self._resize_crop(frame.to_ndarray(format="rgb24"))

    def _resize_crop(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (h, w, 3) -> uint8 (height, width, 3): cover, then centre crop."""
        from PIL import Image

        h, w = rgb.shape[:2]
        scale = max(self.height / h, self.width / w)
        new_w, new_h = max(self.width, round(w * scale)), max(self.height, round(h * scale))
        image = Image.fromarray(rgb)
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=Image.BICUBIC)
        left, top = (new_w - self.width) // 2, (new_h - self.height) // 2
        image = image.crop((left, top, left + self.width, top + self.height))
        return np.asarray(image)


def to_unit_range(video: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return video.astype(np.float32) / 127.5 - 1.0


class ManifestExamples:
    """Record index -> {"video" (frames, height, width, 3) uint8, "caption" str}, or ``Unreadable``; picklable.

    ``collate`` stacks examples into a batch: "video" (b, frames, height, width, 3) float32 in [-1, 1], "caption"
    (b,) object array of str.
    """

    def __init__(self, entries: list[ManifestEntry], decoder: ClipDecoder):
        self.entries, self.decoder = entries, decoder

    def __len__(self) -> int:
        return len(self.entries)

    def __call__(self, index: int) -> dict | Unreadable:
        entry = self.entries[index]
        try:
            video = self.decoder(entry)
        except Exception as e:  # noqa: BLE001 -- any failure to decode one file makes that file unusable, not the run
            return Unreadable(str(entry), describe(e))
        return {"video": video, "caption": entry.caption}

    @staticmethod
    def collate(examples: list[dict]) -> dict[str, np.ndarray]:
        captions = np.empty(len(examples), dtype=object)
        captions[:] = [e["caption"] for e in examples]
        return {"video": to_unit_range(np.stack([e["video"] for e in examples])), "caption": captions}
