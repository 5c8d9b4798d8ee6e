"""What a shapes-world video shows: a deterministic detector of its one object's colour, shape and direction.

The detector (`detect`) reads colour, shape and direction from uint8 video with no learned model: the background is
each frame's median colour (the object covers < 15 % of the frame); the object is the largest 4-connected blob, on
the torus, of pixels at least half as far from the background as the object's own colour (the 50 % level of an edge,
so blur neither grows nor shrinks it); colour is the hue of the object minus the background (hue is unchanged by
blending with a grey background, so blurred edges and brightness shifts do not move it); shape is the best IoU
against `sana_jax.shapes.world.coverage` templates of the blob's area; direction is the dominant axis and sign of the
blob's velocity, a robust line fit to its centre track unwrapped on the torus.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sana_jax.shapes import world


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """What `detect` read from one video of F frames. Attributes are names as in `sana_jax.shapes.world`, or None
    when no frame holds an object (direction: also when fewer than two do, or the object barely moves)."""

    colour: str | None
    shape: str | None
    direction: str | None
    present: np.ndarray          # (F,) bool: an object-sized blob of non-background pixels is in the frame
    centres: np.ndarray          # (F, 2) float (y, x) on the torus, pixel-index units; NaN where absent
    velocity: tuple[float, float]   # (dy, dx) px/frame, `track_velocity`; NaN when unmeasurable
    shape_scores: tuple[float, ...]  # mean IoU against each of `SHAPES`' templates over present frames


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle (radians) of RGB vectors (..., 3) in the opponent plane orthogonal to the grey axis."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2(np.sqrt(3.0) / 2 * (g - b), r - (g + b) / 2)


_PALETTE_HUES = _hue(np.asarray(list(world.COLOURS.values()), np.float64))   # (5,)


def _largest_components(mask: np.ndarray) -> np.ndarray:
    """(F, H, W) bool -> (F, H, W) bool: per frame the largest 4-connected component of ``mask`` on the torus."""
    big = mask.size
    index = np.arange(mask.size).reshape(mask.shape)
    labels = np.where(mask, index, big)
    while True:   # min-label propagation over the four torus neighbours, with pointer jumping
        new = labels
        for shift, axis in ((1, 1), (-1, 1), (1, 2), (-1, 2)):
            new = np.minimum(new, np.roll(labels, shift, axis))
        new = np.where(mask, new, big)
        new[mask] = new.reshape(-1)[new[mask]]
        if np.array_equal(new, labels):
            break
        labels = new
    out = np.zeros_like(mask)
    for f in range(mask.shape[0]):
        values, counts = np.unique(labels[f][mask[f]], return_counts=True)
        if len(values):
            out[f] = labels[f] == values[np.argmax(counts)]
    return out


def _recentre(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[float, float]]:
    """Rolls a (H, W) blob so its circular-mean centre sits mid-frame (undoing wrap at the edges).
    Returns (rolled mask, the roll (sy, sx), the blob's centroid (y, x) in the rolled frame)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy = np.angle(np.exp(2j * np.pi * ys / h).mean()) * h / (2 * np.pi)
    cx = np.angle(np.exp(2j * np.pi * xs / w).mean()) * w / (2 * np.pi)
    roll = (int(round(h / 2 - cy)) % h, int(round(w / 2 - cx)) % w)
    ys, xs = (ys + roll[0]) % h, (xs + roll[1]) % w
    return np.roll(mask, roll, axis=(0, 1)), roll, (float(ys.mean()), float(xs.mean()))


def _radius_for_area(shape: str, area: float) -> float:
    """The `world._inside` radius whose shape has this area (circle pi r^2, square (1.7 r)^2, triangle 2 r^2)."""
    return {"circle": math.sqrt(area / math.pi), "square": math.sqrt(area) / 1.7,
            "triangle": math.sqrt(area / 2)}[shape]


def _shape_ious(rolled: np.ndarray, centroid: tuple[float, float]) -> np.ndarray:
    """(3,) IoU of a re-centred (H, W) blob against each shape's template of the same area and centroid."""
    h, w = rolled.shape
    area = float(rolled.sum())
    half = min(h, w, 4 * int(math.ceil(math.sqrt(area))) + 4) // 2   # a window well beyond the object
    y0, x0 = h // 2 - half, w // 2 - half
    crop = rolled[y0:y0 + 2 * half, x0:x0 + 2 * half]
    cy, cx = centroid[0] - y0, centroid[1] - x0
    ious = []
    for shape in world.SHAPES:
        r = _radius_for_area(shape, area)
        dy = r / 3 if shape == "triangle" else 0.0    # a triangle's centroid lies r/3 below its box centre
        template = world.coverage(shape, (cy - dy, cx), r, crop.shape[0], crop.shape[1]) >= 0.5
        union = np.logical_or(template, crop).sum()
        ious.append(np.logical_and(template, crop).sum() / max(union, 1))
    return np.asarray(ious)


def track_velocity(centres: np.ndarray, frames: np.ndarray, size: tuple[int, int]) -> tuple[float, float]:
    """(dy, dx) px/frame of centres (K, 2) measured at ``frames`` (K,), K >= 2, on a torus of ``size`` (H, W).

    The track is unwrapped by taking each step between measured frames into (-size/2, size/2]; the velocity is the
    Theil-Sen slope (median over all pairs of frames), which a few misread frames cannot move.
    """
    size = np.asarray(size, np.float64)
    steps = np.diff(centres, axis=0)
    steps = -((-steps + size / 2) % size - size / 2)
    track = np.concatenate([centres[:1], centres[:1] + np.cumsum(steps, axis=0)])       # (K, 2) unwrapped
    i, j = np.triu_indices(len(frames), k=1)
    slopes = (track[j] - track[i]) / (frames[j] - frames[i])[:, None]
    return tuple(float(v) for v in np.median(slopes, axis=0))


def direction_of(velocity, min_speed: float = 0.25) -> str | None:
    """left/right/up/down for a (dy, dx) velocity (y grows downward: "up" is dy < 0); None below ``min_speed``."""
    dy, dx = velocity
    if not np.isfinite([dy, dx]).all() or max(abs(dy), abs(dx)) < min_speed:
        return None
    if abs(dy) > abs(dx):
        return "up" if dy < 0 else "down"
    return "left" if dx < 0 else "right"


def detect(frames: np.ndarray, *, min_contrast: float = 40.0, min_area: int = 12, max_area_fraction: float = 0.3,
           min_speed: float = 0.25) -> Detection:
    """Reads the one shape of a shapes-world video. ``frames``: uint8 (F, H, W, 3).

    A frame holds an object when some pixel stands ``min_contrast`` (RGB distance) off the background and the
    largest blob covers between ``min_area`` pixels and ``max_area_fraction`` of the frame; other frames are
    skipped. ``min_speed`` px/frame: slower is "not moving" (direction None).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected (F, H, W, 3); got shape {frames.shape}")
    video = frames.astype(np.float32)
    n, h, w, _ = video.shape
    background = np.median(video.reshape(n, -1, 3), axis=1)                          # (F, 3)
    offset = video - background[:, None, None]                                       # (F, H, W, 3)
    distance = np.linalg.norm(offset, axis=-1)                                       # (F, H, W)
    # The object's contrast: a high percentile, which the object (>= ~5 % of a 32 x 32 frame) always reaches.
    peak = np.percentile(distance.reshape(n, -1), 99.5, axis=1)                      # (F,)
    blob = _largest_components(distance >= np.maximum(peak, min_contrast)[:, None, None] / 2)
    area = blob.sum(axis=(1, 2))
    present = (peak >= min_contrast) & (area >= min_area) & (area <= max_area_fraction * h * w)

    centres = np.full((n, 2), np.nan)
    ious, chroma = [], np.zeros(2)
    for f in np.nonzero(present)[0]:
        rolled, roll, centroid = _recentre(blob[f])
        centres[f] = ((centroid[0] - roll[0]) % h, (centroid[1] - roll[1]) % w)
        ious.append(_shape_ious(rolled, centroid))
        core = blob[f] & (distance[f] >= 0.75 * peak[f])      # confident pixels: away from the blurred edge
        rgb = offset[f][core]
        hue = _hue(rgb.astype(np.float64))
        magnitude = np.linalg.norm(rgb, axis=-1)
        chroma += [(magnitude * np.cos(hue)).sum(), (magnitude * np.sin(hue)).sum()]

    if not ious:
        return Detection(None, None, None, present, centres, (math.nan, math.nan), (math.nan,) * len(world.SHAPES))
    scores = np.mean(ious, axis=0)
    hue = math.atan2(chroma[1], chroma[0])
    hue_gap = np.abs(np.angle(np.exp(1j * (_PALETTE_HUES - hue))))
    colour = list(world.COLOURS)[int(np.argmin(hue_gap))]

    seen = np.nonzero(present)[0]
    velocity = (math.nan, math.nan)
    if len(seen) >= 2:
        velocity = track_velocity(centres[seen], seen, (h, w))
    return Detection(colour, world.SHAPES[int(np.argmax(scores))], direction_of(velocity, min_speed), present,
                     centres, velocity, tuple(float(s) for s in scores))
