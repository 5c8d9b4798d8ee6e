"""Frames in and out: [-1, 1] floats <-> uint8, images for image-to-video, mp4 written atomically."""

from __future__ import annotations

import os
import warnings

import jax.numpy as jnp
import numpy as np

from sana_jax import _io


def to_uint8(video):
    """[-1, 1] floats (..., 3) -> uint8, as diffusers' postprocess then PIL conversion: round(255·clip(x/2+1/2)).

    Works inside jit (a jax array in, a jax array out) and on host arrays alike.
    """
    x = jnp.clip(jnp.asarray(video, jnp.float32) / 2 + 0.5, 0.0, 1.0)
    return jnp.round(x * 255).astype(jnp.uint8)


def load_image(image, height: int, width: int) -> np.ndarray:
    """A PIL image, uint8 array (H, W, 3) or path -> float32 (height, width, 3) in [-1, 1].

    Resized with PIL's Lanczos filter when the size differs (diffusers' VideoProcessor default).
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image: {image} does not exist")
        image = Image.open(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"image: expected a uint8 array (H, W, 3); got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL image, a uint8 array or a path; got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.LANCZOS)
    return np.asarray(image, np.float32) / 127.5 - 1.0


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 16) -> None:
    """uint8 frames (F, H, W, 3) -> H.264 mp4 via imageio-ffmpeg; written to a temp file, then renamed."""
    with Mp4Writer(path, fps) as writer:
        writer.append(frames)


class Mp4Writer:
    """Appends uint8 chunks (f, H, W, 3) to an H.264 mp4 as they come; the file appears (by rename) only when the
    writer closes without error, so a failed or interrupted run leaves nothing behind."""

    def __init__(self, path: str | os.PathLike, fps: int = 16):
        self.path, self.fps = path, fps
        self.frames = 0

    def __enter__(self):
        import imageio.v2 as imageio

        self._atomic = _io.atomic_file(self.path, suffix=".mp4")
        tmp = self._atomic.__enter__()
        # ffmpeg starts as a subprocess (fork + exec at once) on the first frame; JAX's fork warning does not apply.
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        self._writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                          pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
        return self

    def append(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 (F, H, W, 3); got {frames.dtype} {frames.shape}")
        for frame in frames:
            # A signal is raised after the frame, never inside imageio's ffmpeg generator: raised there (or while it
            # spawns ffmpeg) it would leave ffmpeg unreaped, still writing the temporary file after its removal.
            with _io.signals_deferred():
                self._writer.append_data(frame)
        self.frames += len(frames)

    def __exit__(self, *exc):
        try:
            self._writer.close()  # waits for ffmpeg to finish (and reaps it)
        except BaseException as e:  # the temporary goes; the close error is raised (after the one being handled)
            self._quiet.__exit__(*exc)
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._quiet.__exit__(*exc)
        return self._atomic.__exit__(*exc)
