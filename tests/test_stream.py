"""Long video block by block: the streamed blocks equal the whole-sequence block-causal model run the same way,
each block compiles once per shape, and sample.py --stream writes a long mp4."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.pipelines import build_tiny_pipeline
from sana_jax.pipeline import SanaVideoPipeline
from sana_jax.pipeline.stream import FEW_STEP_TIMESTEPS, block_sizes
from sana_jax.pipeline.video_io import to_uint8

SIZE = dict(height=32, width=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "tiny"
    build_tiny_pipeline(path, seed=3)
    return path


@pytest.fixture(scope="module")
def pipe(folder):
    return SanaVideoPipeline.from_pretrained(folder)


def test_block_sizes_put_the_remainder_in_the_first_block():
    assert block_sizes(21, 10) == (11, 10)
    assert block_sizes(241, 10) == (11,) + (10,) * 23
    assert block_sizes(7, 10) == (7,)


def _few_step_reference(pipe, embeds, mask, shape, blocks, seed):
    """The same sampler written with the whole-sequence block-causal model: every earlier block clean at t = 0,
    the current block at t, block_sizes over all frames so far (no carried state)."""
    model = pipe.transformer
    key = jax.random.key(seed)
    done = None
    for index, size in enumerate(blocks):
        bkey = jax.random.fold_in(key, index)
        sub = shape[:1] + (size,) + shape[2:]
        x = jax.random.normal(jax.random.fold_in(bkey, 1_000_000), sub, jnp.float32)
        sizes = tuple(blocks[:index + 1])
        for j, t in enumerate(FEW_STEP_TIMESTEPS):
            full = x if done is None else jnp.concatenate([done, x], axis=1)
            tt = np.zeros(full.shape[:2], np.float32)
            tt[:, -size:] = t
            v = model(full, jnp.asarray(tt), embeds, mask, block_sizes=sizes)[:, -size:]
            x0 = x - t / 1000 * v
            if j + 1 == len(FEW_STEP_TIMESTEPS):
                x = x0
                break
            nxt = FEW_STEP_TIMESTEPS[j + 1] / 1000
            x = (1 - nxt) * x0 + nxt * jax.random.normal(jax.random.fold_in(bkey, j), sub, jnp.float32)
        done = x if done is None else jnp.concatenate([done, x], axis=1)
    return np.asarray(done)


def test_few_step_stream_equals_whole_sequence_block_causal_sampling(pipe):
    shape = pipe.latent_shape(1, 32, 32, 29)  # 8 latent frames
    blocks = block_sizes(shape[1], 3)  # (5, 3)... the first absorbs the remainder
    embeds, mask = pipe._conditioning("a red circle", "", False, 1, None, None, 300)
    streamed = [x for x, _ in pipe._streamer.run(embeds, mask, latent_shape=shape, blocks=blocks, seed=4,
                                                 sampler="few_step", schedule=None, guidance_scale=1.0, cfg=False,
                                                 image_latents=None)]
    reference = _few_step_reference(pipe, embeds, mask, shape, blocks, seed=4)
    assert rel_err(np.concatenate(streamed, axis=1), reference) <= 1e-5


def test_stream_compiles_once_per_shape_and_yields_every_frame(pipe):
    before = pipe._streamer.traces
    chunks = list(pipe.stream("a red circle moving left", frames=4 * 13 + 1, block_frames=2, seed=1,
                              instruction=None, **SIZE))  # 14 latent frames -> 7 blocks
    assert len(chunks) == 7
    assert pipe._streamer.traces - before <= 2  # first block + the rest
    video = np.concatenate(chunks, axis=1)
    assert video.dtype == np.uint8 and video.shape == (1, 53, 32, 32, 3)
    # The VAE decode carried across blocks equals decoding all the streamed latents at once.
    embeds, mask = pipe._conditioning("a red circle moving left", "", False, 1, None, None, 300)
    pairs = list(pipe._streamer.run(embeds, mask, latent_shape=pipe.latent_shape(1, 32, 32, 53),
                                    blocks=block_sizes(14, 2), seed=1, sampler="few_step", schedule=None,
                                    guidance_scale=1.0, cfg=False, image_latents=None))
    assert pipe._streamer.traces - before <= 2
    whole = to_uint8(np.asarray(pipe.vae.decode(jnp.concatenate([x for x, _ in pairs], axis=1))))
    streamed = np.concatenate([np.asarray(v) for _, v in pairs], axis=1)
    assert np.abs(whole.astype(np.int16) - streamed.astype(np.int16)).max() <= 1


def test_dpm_stream_with_cfg_and_image_runs_and_pins_the_first_frame(pipe):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    embeds, mask = pipe._conditioning("a red circle", "", True, 1, None, None, 300)
    shape = pipe.latent_shape(1, 32, 32, 17)
    image_latents = pipe._image_latents(image, 32, 32, 1)
    out = [x for x, _ in pipe._streamer.run(embeds, mask, latent_shape=shape, blocks=(3, 2), seed=0, sampler="dpm",
                                            schedule=pipe.scheduler.schedule(3), guidance_scale=4.0, cfg=True,
                                            image_latents=image_latents)]
    np.testing.assert_array_equal(np.asarray(out[0][:, :1]), np.asarray(image_latents))
    assert np.isfinite(np.concatenate(out, axis=1)).all()


@pytest.mark.slow
def test_sample_py_stream_writes_a_961_frame_mp4(folder, tmp_path):
    import imageio.v2 as imageio

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "minute.mp4"
    proc = subprocess.run([sys.executable, "sample.py", "--model", str(folder), "--prompt", "a red circle",
                           "--height", "32", "--width", "32", "--frames", "961", "--stream", "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    reader = imageio.get_reader(out, format="FFMPEG")
    try:
        count = sum(1 for frame in reader if frame.shape == (32, 32, 3))
    finally:
        reader.close()
    assert count == 961


def test_a_video_longer_than_the_rope_table_is_refused_before_sampling(pipe):
    """Past rope_max_seq_len latent frames RoPE has no position (it would read NaN): both calls refuse the size."""
    limit = pipe.transformer.config.rope_max_seq_len
    frames = 4 * limit + 1  # limit + 1 latent frames
    with pytest.raises(ValueError, match=f"frames={frames}: {limit + 1} latent positions.*rope_max_seq_len={limit}"):
        next(iter(pipe.stream("a red circle", frames=frames, **SIZE)))
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        pipe("a red circle", frames=frames, num_inference_steps=1, **SIZE)
    assert pipe.latent_shape(1, 32, 32, frames - 4)[1] == limit


def test_causal_checkpoint_loads_and_samples_streamed_by_default(folder, tmp_path):
    import json
    import shutil

    causal = tmp_path / "causal"
    shutil.copytree(folder, causal)
    cfg_path = causal / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = "SanaVideoCausalTransformer3DModel"
    cfg_path.write_text(json.dumps(cfg))
    from sana_jax.pipeline.sample import sample_to_file

    logs = []
    sample_to_file(str(causal), "a red circle", str(tmp_path / "v.mp4"), height=32, width=32, frames=25,
                   block_frames=2, log=logs.append)
    assert any("streamed block by block" in line for line in logs)
    cfg["num_frames_per_block"] = 10  # a key this project does not know is reported by name
    cfg_path.write_text(json.dumps(cfg))
    from sana_jax import load_component
    from sana_jax.config import ConfigError

    with pytest.raises(ConfigError, match="num_frames_per_block"):
        load_component(causal / "transformer")


def test_windowed_decode_decodes_each_block_after_the_first_frame_and_the_window_before_it(pipe, folder):
    """decode_window = c: each block after the first is diffusers' AutoencoderKLWan decode of [latent frame 0, the c
    latent frames before the block, the block], of which the block's frames are kept (the first block decodes
    alone)."""
    import torch
    from diffusers import AutoencoderKLWan

    c = 3
    embeds, mask = pipe._conditioning("a red circle moving left", "", False, 1, None, None, 300)
    blocks = block_sizes(14, 2)
    pairs = list(pipe._streamer.run(embeds, mask, latent_shape=pipe.latent_shape(1, 32, 32, 53), blocks=blocks,
                                    seed=2, sampler="few_step", schedule=None, guidance_scale=1.0, cfg=False,
                                    image_latents=None, decode_window=c))
    z = np.concatenate([np.asarray(x) for x, _ in pairs], axis=1)
    reference = AutoencoderKLWan.from_pretrained(folder / "vae").eval()
    mean = np.asarray(reference.config.latents_mean, np.float32)
    std = np.asarray(reference.config.latents_std, np.float32)

    def decode(latents):
        raw = torch.from_numpy(np.transpose(latents * std + mean, (0, 4, 1, 2, 3)))
        with torch.no_grad():
            video = reference.decode(raw).sample.clamp(-1, 1).numpy()
        return to_uint8(np.transpose(video, (0, 2, 3, 4, 1)))

    offset = 0
    for (_, video), size in zip(pairs, blocks):
        if offset == 0:
            want = decode(z[:, :size])
        else:
            before = z[:, :offset] if offset <= c + 1 else np.concatenate([z[:, :1], z[:, offset - c:offset]], 1)
            want = decode(np.concatenate([before, z[:, offset:offset + size]], axis=1))[:, -4 * size:]
        got = np.asarray(video)
        assert got.shape == want.shape, (offset, got.shape, want.shape)
        assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1, offset
        offset += size
    with pytest.raises(ValueError, match="decode_window=-1: expected >= 0"):
        next(iter(pipe.stream("a red circle", frames=9, block_frames=1, decode_window=-1, **SIZE)))
