"""A synthetic world whose truth is known: one coloured shape gliding over a plain background.

Each clip shows one shape (circle, square, triangle) of one colour moving at constant speed in one direction
(left, right, up, down) on a torus: what leaves one edge re-enters at the opposite one, so the whole object is
always in the frame and a clip of any length is well defined. Captions read "a red circle moving left".

Everything is a deterministic function of (seed, index). Twelve of the 60 (colour, shape, direction) combinations
are held out of training (`HELD_OUT`); every pair of attribute values still appears in training, so a model that
learns the attributes separately can compose the held-out combinations.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

COLOURS = {  # name -> RGB; saturated and far apart, so the detector's nearest-colour rule is unambiguous
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 215),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}  # (dy, dx)
BACKGROUNDS = ((12, 12, 12), (40, 40, 40), (68, 68, 68))   # plain dark greys

# The native settings of the demo world (and of the demo model trained on it).
HEIGHT = WIDTH = 32
FRAMES = 17
FPS = 8
RADIUS = (5.0, 6.0)          # half the object's extent, pixels
SPEED = (0.75, 1.25)         # pixels per frame
_SUPERSAMPLE = 4             # anti-aliasing: coverage from 4 x 4 sub-pixel samples


def all_combinations() -> list[tuple[str, str, str]]:
    return list(itertools.product(COLOURS, SHAPES, DIRECTIONS))


def _held_out(colour: str, shape: str, direction: str) -> bool:
    i, j, k = list(COLOURS).index(colour), SHAPES.index(shape), list(DIRECTIONS).index(direction)
    return (i + j + k) % 5 == 0


HELD_OUT = tuple(c for c in all_combinations() if _held_out(*c))
TRAIN = tuple(c for c in all_combinations() if not _held_out(*c))
SPLITS = {"train": TRAIN, "held_out": HELD_OUT}


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text: str) -> tuple[str, str, str]:
    """(colour, shape, direction) of a caption written by `caption`; ValueError naming the text otherwise."""
    words = text.strip().lower().split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving" or words[1] not in COLOURS \
            or words[2] not in SHAPES or words[4] not in DIRECTIONS:
        raise ValueError(f"caption {text!r}: expected 'a <colour> <shape> moving <direction>' with colour in "
                         f"{list(COLOURS)}, shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}")
    return words[1], words[2], words[4]


def vocabulary() -> list[str]:
    """Every word a caption can hold, in a fixed order."""
    return ["a", "moving", *COLOURS, *SHAPES, *DIRECTIONS]


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip's truth: attributes plus nuisance (start centre (y, x) in pixels, radius, speed, background)."""

    colour: str
    shape: str
    direction: str
    centre: tuple[float, float]
    radius: float
    speed: float
    background: tuple[int, int, int]

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.direction)

    def centre_at(self, frame: float, height: int = HEIGHT, width: int = WIDTH) -> tuple[float, float]:
        dy, dx = DIRECTIONS[self.direction]
        return ((self.centre[0] + dy * self.speed * frame) % height, (self.centre[1] + dx * self.speed * frame) % width)


def sample_clip(rng: np.random.Generator, combinations=TRAIN, height: int = HEIGHT, width: int = WIDTH) -> Clip:
    colour, shape, direction = combinations[rng.integers(len(combinations))]
    return Clip(colour, shape, direction, centre=(float(rng.uniform(0, height)), float(rng.uniform(0, width))),
                radius=float(rng.uniform(*RADIUS)), speed=float(rng.uniform(*SPEED)),
                background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))])


def _inside(shape: str, y, x, radius: float):
    """Boolean mask of points at offsets (y, x) from the centre lying inside the shape."""
    if shape == "circle":
        return y * y + x * x <= radius * radius
    if shape == "square":
        half = radius * 0.85   # same area scale as the circle, near enough: the detector reads the outline
        return (np.abs(y) <= half) & (np.abs(x) <= half)
    if shape == "triangle":    # apex up, base down: height 2r, base 2r
        top, bottom = -radius, radius
        t = (y - top) / (bottom - top)            # 0 at the apex, 1 at the base
        return (y >= top) & (y <= bottom) & (np.abs(x) <= t * radius)
    raise ValueError(f"shape {shape!r}: expected one of {SHAPES}")


def coverage(shape: str, centre: tuple[float, float], radius: float, height: int, width: int) -> np.ndarray:
    """Fraction (H, W) float32 of each pixel the shape covers, on the torus (wrapping at the edges)."""
    s = _SUPERSAMPLE
    sub = (np.arange(s) + 0.5) / s
    ys = (np.arange(height)[:, None] + sub[None, :]).reshape(-1)     # (H * s,) pixel-space sample positions
    xs = (np.arange(width)[:, None] + sub[None, :]).reshape(-1)
    # Offsets from the centre on the torus, in (-size/2, size/2].
    dy = (ys - centre[0] - 0.5 + height / 2) % height - height / 2
    dx = (xs - centre[1] - 0.5 + width / 2) % width - width / 2
    inside = _inside(shape, dy[:, None], dx[None, :], radius)
    return inside.reshape(height, s, width, s).mean(axis=(1, 3)).astype(np.float32)


def render(clip: Clip, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH, start: int = 0) -> np.ndarray:
    """uint8 (frames, H, W, 3): frames ``start .. start + frames - 1`` of the clip."""
    colour = np.asarray(COLOURS[clip.colour], np.float32)
    background = np.asarray(clip.background, np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        a = coverage(clip.shape, clip.centre_at(start + f, height, width), clip.radius, height, width)[..., None]
        out[f] = np.round(a * colour + (1 - a) * background).astype(np.uint8)
    return out


class ShapesExamples:
    """Training data source: record ``i`` -> {"video": (F, H, W, 3) float32 in [-1, 1], "caption": str}, a clip of
    a training combination drawn from (seed, i). ``len`` is ``num_examples`` (an epoch)."""

    def __init__(self, *, seed: int, num_examples: int, frames: int = FRAMES, height: int = HEIGHT,
                 width: int = WIDTH, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {sorted(SPLITS)}")
        for name, value in (("num_examples", num_examples), ("frames", frames), ("height", height), ("width", width)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name}={value!r}: expected a positive int")
        self.seed, self.num_examples, self.frames, self.height, self.width = seed, num_examples, frames, height, width
        self.combinations = SPLITS[split]

    def __len__(self) -> int:
        return self.num_examples

    def clip(self, index: int) -> Clip:
        return sample_clip(np.random.default_rng([self.seed, int(index)]), self.combinations, self.height, self.width)

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        video = render(clip, self.frames, self.height, self.width).astype(np.float32) / 127.5 - 1.0
        return {"video": video, "caption": clip.caption}

    __call__ = __getitem__    # grain's MapDataset.map takes a callable

    @staticmethod
    def collate(examples: list[dict]) -> dict:
        return {"video": np.stack([e["video"] for e in examples]),
                "caption": np.array([e["caption"] for e in examples], dtype=object)}
