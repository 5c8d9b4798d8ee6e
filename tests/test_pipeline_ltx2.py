"""The 720p layout end to end against diffusers: a tiny pipeline with the LTX-2 VAE (32x spatial, 8x temporal,
random latents_mean / latents_std) and a patch-1 transformer of sample_size 22, run by both from the same noise;
resolution binning against diffusers' VideoProcessor; the errors that name what to change."""

import copy
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.pipelines import build_tiny_pipeline
from sana_jax.pipeline import SanaVideoPipeline
from sana_jax.pipeline.sana_video import ASPECT_RATIO_BINS, closest_bin, resize_and_crop
from sana_jax.pipeline.stream import block_sizes
from sana_jax.pipeline.video_io import to_uint8

PROMPT = "A red circle moving LEFT on a white background"
SIZE = dict(height=64, width=96, frames=17)  # latents (3, 2, 3): non-square, and more than one latent frame


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe_ltx2") / "tiny"
    build_tiny_pipeline(path, seed=1, vae="ltx2")
    return path


@pytest.fixture(scope="module")
def reference(folder):
    from diffusers import SanaVideoPipeline as TorchPipeline

    return TorchPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def ours(folder):
    return SanaVideoPipeline.from_pretrained(folder)


def _noise(seed, height, width, frames, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, (frames - 1) // 8 + 1, height // 32, width // 32, generator=g)


def _cl(x):  # channels-first torch -> channels-last numpy
    return x.numpy().transpose(0, 2, 3, 4, 1)


def _assert_frames_match(video, ref_video):
    """uint8 frames within 1 of diffusers' float frames, and mostly unsaturated so the comparison means something."""
    expected = np.round(np.clip(ref_video, 0, 1) * 255).astype(np.int16)
    assert video.dtype == np.uint8 and video.shape == expected.shape
    diff = np.abs(video.astype(np.int16) - expected).max()
    unsaturated = np.mean((expected > 0) & (expected < 255))
    assert diff <= 1, diff
    assert unsaturated >= 0.5, unsaturated


def test_vae_scale_factors_match_diffusers(reference, ours):
    assert (ours.vae_scale_spatial, ours.vae_scale_temporal) == (32, 8)
    assert ours.vae_scale_spatial == reference.vae_scale_factor_spatial
    assert ours.vae_scale_temporal == reference.vae_scale_factor_temporal


def test_ltx2_text_to_video_with_cfg_matches_diffusers(reference, ours):
    noise = _noise(0, SIZE["height"], SIZE["width"], SIZE["frames"])
    kw = dict(negative_prompt="blurry", num_inference_steps=3, guidance_scale=4.5, **SIZE)
    with torch.no_grad():
        ref_latents = reference(PROMPT, latents=noise.clone(), output_type="latent", use_resolution_binning=False,
                                **kw).frames
        ref_video = reference(PROMPT, latents=noise.clone(), output_type="np", use_resolution_binning=False,
                              **kw).frames
    latents = ours(PROMPT, latents=_cl(noise), output_type="latent", **kw)
    assert latents.shape == (1, 3, 2, 3, 8)
    assert rel_err(latents, _cl(ref_latents)) <= 1e-4
    video = ours(PROMPT, latents=_cl(noise), **kw)
    assert video.shape == (1, 17, 64, 96, 3)
    _assert_frames_match(video, ref_video)


def test_ltx2_decode_in_runs_matches_diffusers(reference, ours):
    """The non-causal LTX-2 decoder in runs of one latent frame through its carried state (its frames held back
    and flushed by the last run) gives diffusers' video."""
    noise = _noise(3, SIZE["height"], SIZE["width"], SIZE["frames"])
    kw = dict(negative_prompt="", num_inference_steps=2, guidance_scale=4.5, **SIZE)
    with torch.no_grad():
        ref_video = reference(PROMPT, latents=noise.clone(), output_type="np", use_resolution_binning=False,
                              **kw).frames
    _assert_frames_match(ours(PROMPT, latents=_cl(noise), decode_frames=1, **kw), ref_video)


def test_ltx2_image_to_video_matches_diffusers(folder, ours):
    from diffusers import SanaImageToVideoPipeline

    reference = SanaImageToVideoPipeline.from_pretrained(folder)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE["height"], SIZE["width"], 3), dtype=np.uint8))
    noise = _noise(1, SIZE["height"], SIZE["width"], SIZE["frames"])
    kw = dict(negative_prompt="", num_inference_steps=3, guidance_scale=4.5, **SIZE)
    with torch.no_grad():
        ref_latents = reference(image=image, prompt=PROMPT, latents=noise.clone(), output_type="latent",
                                use_resolution_binning=False, **kw).frames
        ref_video = reference(image=image, prompt=PROMPT, latents=noise.clone(), output_type="np",
                              use_resolution_binning=False, **kw).frames
    latents = ours(PROMPT, image=image, latents=_cl(noise), output_type="latent", **kw)
    assert rel_err(latents, _cl(ref_latents)) <= 1e-4
    # Frame 0 is the clean, normalised image latent, never updated.
    image_latents = ours.vae.encode(jnp.asarray(np.asarray(image, np.float32) / 127.5 - 1)[None, None])
    np.testing.assert_allclose(latents[:, :1], image_latents, atol=1e-5)
    _assert_frames_match(ours(PROMPT, image=image, latents=_cl(noise), **kw), ref_video)


def test_bin_tables_and_closest_bin_match_diffusers():
    from diffusers.pipelines.sana_video.pipeline_sana_video import ASPECT_RATIO_480_BIN, ASPECT_RATIO_720_BIN
    from diffusers.video_processor import VideoProcessor

    tables = {30: ASPECT_RATIO_480_BIN, 22: ASPECT_RATIO_720_BIN}
    for sample_size, table in tables.items():
        assert list(ASPECT_RATIO_BINS[sample_size]) == [float(k) for k in table]
        assert list(ASPECT_RATIO_BINS[sample_size].values()) == [(int(h), int(w)) for h, w in table.values()]
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(16, 2048, (300, 2))]
    # Exact ratios and midpoints between neighbouring keys, where the tie rule decides.
    keys = sorted(float(k) for k in ASPECT_RATIO_720_BIN)
    sizes += [(round(1000 * k), 1000) for k in keys] + [(round(500 * (a + b)), 1000) for a, b in zip(keys, keys[1:])]
    for sample_size, table in tables.items():
        for h, w in sizes:
            assert closest_bin(h, w, sample_size) == VideoProcessor.classify_height_width_bin(h, w, ratios=table)


@pytest.mark.parametrize("source,target", [
    ((704, 1280), (360, 640)),    # down, crop width
    ((704, 1280), (720, 1300)),   # up, crop width
    ((1024, 896), (1000, 1000)),  # up, crop height
    ((40, 24), (17, 9)),          # down, odd sizes
    ((32, 48), (32, 48)),         # unchanged
    ((30, 30), (61, 29)),         # up, crop width
])
def test_resize_and_crop_matches_diffusers_video_processor(source, target):
    from diffusers.video_processor import VideoProcessor

    g = torch.Generator().manual_seed(0)
    video = 2 * torch.rand(2, 3, 2, *source, generator=g) - 1  # (N, C, T, H, W)
    expected = VideoProcessor.resize_and_crop_tensor(video, target[1], target[0])
    got = np.asarray(resize_and_crop(jnp.asarray(_cl(video)), *target))
    assert got.shape == (2, 2, *target, 3)
    # Float rounding of the sample positions may differ by an ulp between torch builds; a shifted tap is ~0.1.
    np.testing.assert_allclose(got, _cl(expected), atol=1e-5)


def test_resolution_binning_samples_at_the_720p_bin_and_resizes_like_diffusers(reference, ours):
    # 360x640 -> the 0.57 bin, 704x1280, then bilinear down to 360x654 and a centre crop to 640 wide.
    # One frame keeps the 704x1280 decode cheap; the resize itself is checked on several frames above.
    noise = _noise(2, 704, 1280, 1)
    kw = dict(negative_prompt="", num_inference_steps=2, guidance_scale=4.5, height=360, width=640, frames=1)
    with torch.no_grad():
        ref_video = reference(PROMPT, latents=noise.clone(), output_type="np", use_resolution_binning=True,
                              **kw).frames
    # Noise shaped for the bin (ours checks the shape of given latents against the size it samples at).
    video = ours(PROMPT, latents=_cl(noise), use_resolution_binning=True, **kw)
    assert video.shape == (1, 1, 360, 640, 3)
    _assert_frames_match(video, ref_video)


def test_a_size_the_model_does_not_divide_points_to_resolution_binning(ours):
    with pytest.raises(ValueError, match=r"height=48, width=64.*use_resolution_binning=True"):
        ours("x", height=48, width=64, frames=9, num_inference_steps=1)
    with pytest.raises(ValueError, match="frames=10"):
        ours("x", height=64, width=64, frames=10, num_inference_steps=1)


@pytest.mark.parametrize("latent_frames,block_frames", [(11, 3), (3, 4)])
def test_stream_with_the_ltx2_vae_equals_decoding_the_streamed_latents_at_once(ours, latent_frames, block_frames):
    """One decoder run per block: the first chunks are short or empty (frames still crossing the non-causal
    layers), the last block flushes the rest; a clip of one block comes out whole."""
    frames = 1 + 8 * (latent_frames - 1)
    pairs = list(ours._streamer.run(*ours._conditioning("x", "", False, 1, None, None, 300), latent_shape=(
        1, latent_frames, 2, 2, 8), blocks=block_sizes(latent_frames, block_frames), seed=0, sampler="few_step",
        schedule=None, guidance_scale=1.0, cfg=False, image_latents=None))
    chunks = [np.asarray(v) for _, v in pairs]
    lengths = [c.shape[1] for c in chunks]
    assert sum(lengths) == frames and len(chunks) == len(block_sizes(latent_frames, block_frames))
    latents = jnp.concatenate([x for x, _ in pairs], axis=1)
    whole = np.asarray(to_uint8(ours.vae.decode(latents)))
    streamed = np.concatenate(chunks, axis=1)
    diff = np.abs(streamed.astype(np.int16) - whole).max()
    print(f"\nLTX-2 stream {lengths}: max uint8 diff vs decoding all streamed latents at once {diff}")
    assert streamed.shape == whole.shape and diff <= 1


def test_resolution_binning_without_a_bin_table_names_the_sample_size(ours):
    with pytest.raises(ValueError, match="sample_size=16"):
        closest_bin(480, 832, 16)
    pipe = copy.copy(ours)
    pipe.transformer = copy.copy(ours.transformer)
    pipe.transformer.config = dataclasses.replace(ours.transformer.config, sample_size=16)
    with pytest.raises(ValueError, match="sample_size=16"):
        pipe("x", height=480, width=832, frames=9, num_inference_steps=1, use_resolution_binning=True)
    # Without a table the size error does not suggest binning.
    with pytest.raises(ValueError, match="height=48") as info:
        pipe("x", height=48, width=64, frames=9, num_inference_steps=1)
    assert "use_resolution_binning" not in str(info.value)
