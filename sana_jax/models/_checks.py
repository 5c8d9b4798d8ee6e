"""Input checks shared by the video autoencoders (shapes are static, so they run at trace time)."""

from __future__ import annotations


def check_video(video, channels: int, temporal: int, spatial: int) -> None:
    """video (B, F, H, W, channels) with F = temporal k + 1 and H, W positive multiples of ``spatial``."""
    if video.ndim != 5 or video.shape[-1] != channels:
        raise ValueError(f"video: expected shape (B, F, H, W, {channels}) channels-last, got {tuple(video.shape)}")
    _, f, h, w, _ = video.shape
    if (f - 1) % temporal:
        raise ValueError(f"video: frames = {f}; expected {temporal}k + 1 frames (1, {1 + temporal}, "
                         f"{1 + 2 * temporal}, ...)")
    for name, size in (("height", h), ("width", w)):
        if size % spatial or size == 0:
            raise ValueError(f"video: {name} = {size}; expected a positive multiple of {spatial}")


def check_latents(latents, channels: int, allow_empty: bool = False) -> None:
    """latents (B, T, h, w, channels) with T >= 1 (>= 0 with ``allow_empty``)."""
    if latents.ndim != 5 or latents.shape[-1] != channels or latents.shape[1] < (0 if allow_empty else 1):
        raise ValueError(f"latents: expected shape (B, T >= 1, h, w, {channels}) channels-last, got "
                         f"{tuple(latents.shape)}")
