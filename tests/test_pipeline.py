"""End to end against diffusers: a tiny random pipeline saved by diffusers, run by both from the same noise."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from sana_jax.testing.numerics import rel_err
from sana_jax.testing.pipelines import build_tiny_pipeline
from sana_jax.pipeline import SanaVideoPipeline
from sana_jax.pipeline import prompts as prompt_lib

PROMPT = "A red circle moving LEFT on a white background  "
SIZE = dict(height=32, width=32, frames=9)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "tiny"
    build_tiny_pipeline(path)
    return path


@pytest.fixture(scope="module")
def reference(folder):
    from diffusers import SanaVideoPipeline as TorchPipeline

    return TorchPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def ours(folder):
    return SanaVideoPipeline.from_pretrained(folder)


def _noise(seed, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, 3, 4, 4, generator=g)  # (B, C, F', H', W') for 9 frames of 32x32


def _cl(x):  # channels-first torch -> channels-last numpy
    return x.numpy().transpose(0, 2, 3, 4, 1)


@pytest.mark.parametrize("instruction", [True, False])
def test_prompt_tokens_and_embeddings_match_diffusers_encode_prompt(reference, ours, instruction):
    seen = []
    hook = reference.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0].numpy(), kwargs["attention_mask"].numpy())),
        with_kwargs=True)
    prompts = [PROMPT, "Zebra ünïcode, with punctuation!", "a"]
    chi = list(prompt_lib.COMPLEX_HUMAN_INSTRUCTION) if instruction else []
    try:
        with torch.no_grad():
            emb, mask, neg, neg_mask = reference.encode_prompt(prompts, True, negative_prompt="Blurry, LOW quality",
                                                               complex_human_instruction=chi)
    finally:
        hook.remove()
    ids, ids_mask, keep = prompt_lib.tokenize(ours.tokenizer, prompts, instruction=prompt_lib.COMPLEX_HUMAN_INSTRUCTION
                                              if instruction else None)
    np.testing.assert_array_equal(ids, seen[0][0])
    np.testing.assert_array_equal(ids_mask, seen[0][1])
    our_emb, our_mask = ours.encode_prompt(prompts, instruction=prompt_lib.COMPLEX_HUMAN_INSTRUCTION
                                           if instruction else None)
    np.testing.assert_array_equal(np.asarray(our_mask), mask.numpy())
    valid = mask.numpy().astype(bool)
    assert rel_err(np.asarray(our_emb)[valid], emb.numpy()[valid]) <= 1e-5
    our_neg, our_neg_mask = ours.encode_prompt(["Blurry, LOW quality"] * 3, negative=True)
    np.testing.assert_array_equal(np.asarray(our_neg_mask), neg_mask.numpy())
    valid = neg_mask.numpy().astype(bool)
    assert rel_err(np.asarray(our_neg)[valid], neg.numpy()[valid]) <= 1e-5


def test_text_to_video_with_cfg_and_instruction_matches_diffusers(reference, ours):
    noise = _noise(0)
    kw = dict(negative_prompt="blurry", num_inference_steps=4, guidance_scale=6.0, **SIZE)
    with torch.no_grad():
        ref_latents = reference(PROMPT, latents=noise.clone(), output_type="latent", use_resolution_binning=False,
                                **kw).frames
        ref_video = reference(PROMPT, latents=noise.clone(), output_type="np", use_resolution_binning=False,
                              **kw).frames
    latents = ours(PROMPT, latents=_cl(noise), output_type="latent", **kw)
    assert rel_err(latents, _cl(ref_latents)) <= 1e-4
    video = ours(PROMPT, latents=_cl(noise), **kw)
    assert video.dtype == np.uint8 and video.shape == (1, 9, 32, 32, 3)
    expected = np.round(np.clip(ref_video, 0, 1) * 255).astype(np.int16)
    assert np.abs(video.astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize("decode_frames,cfg_batched", [(1, False), (2, True)])
def test_memory_plan_offloaded_text_encoder_and_decode_in_runs_match_diffusers(folder, reference, decode_frames,
                                                                                cfg_batched):
    """Gemma2's weights on the host between its calls, the VAE decoding `decode_frames` latent frames at a time
    through its carried state, the loop donating its latents, CFG's branches batched or as two calls: the same
    video as diffusers, the caller's noise untouched."""
    import jax

    pipe = SanaVideoPipeline.from_pretrained(folder, offload_text_encoder=True)
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(pipe.text_encoder.params))
    noise = _noise(2)
    kw = dict(negative_prompt="blurry", num_inference_steps=3, guidance_scale=6.0, **SIZE)
    with torch.no_grad():
        ref_video = reference(PROMPT, latents=noise.clone(), output_type="np", use_resolution_binning=False,
                              **kw).frames
    given = jnp.asarray(_cl(noise))
    video = pipe(PROMPT, latents=given, decode_frames=decode_frames, cfg_batched=cfg_batched, **kw)
    expected = np.round(np.clip(ref_video, 0, 1) * 255).astype(np.int16)
    assert video.shape == expected.shape and np.abs(video.astype(np.int16) - expected).max() <= 1
    np.testing.assert_array_equal(np.asarray(given), _cl(noise))     # not donated away
    latents = pipe(PROMPT, latents=given, output_type="latent", **kw)
    whole = np.asarray(pipe.decode(latents))
    np.testing.assert_allclose(np.asarray(pipe.decode(latents, decode_frames)), whole, atol=2e-6)


@pytest.mark.parametrize("num_videos", [1, 2])
def test_image_to_video_matches_diffusers(folder, ours, num_videos):
    from diffusers import SanaImageToVideoPipeline

    reference = SanaImageToVideoPipeline.from_pretrained(folder)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    noise = _noise(1, batch=num_videos)
    kw = dict(negative_prompt="", num_inference_steps=3, guidance_scale=4.5, **SIZE)
    # diffusers' i2v breaks with num_videos_per_prompt > 1; the same prompt repeated is the same request.
    with torch.no_grad():
        ref = reference(image=image, prompt=[PROMPT] * num_videos, latents=noise.clone(), output_type="latent",
                        use_resolution_binning=False, **kw).frames
    latents = ours(PROMPT, image=image, latents=_cl(noise), output_type="latent", num_videos_per_prompt=num_videos,
                   **kw)
    assert rel_err(latents, _cl(ref)) <= 1e-4
    # Frame 0 is the clean image latent, never updated.
    image_latents = ours.vae.encode(jnp.asarray(np.asarray(image, np.float32) / 127.5 - 1)[None, None])
    np.testing.assert_allclose(latents[:, :1], np.broadcast_to(image_latents, latents[:, :1].shape), atol=1e-6)


def test_second_call_with_other_prompt_seed_and_guidance_does_not_recompile(ours):
    kw = dict(num_inference_steps=2, output_type="latent", **SIZE)
    first = ours("one prompt", seed=1, guidance_scale=3.0, **kw)
    size = ours._denoise._cache_size()
    second = ours("another, longer prompt", seed=2, guidance_scale=7.5, **kw)
    assert ours._denoise._cache_size() == size
    assert not np.allclose(first, second)
    # The seed decides the noise: the same seed gives the same video.
    np.testing.assert_array_equal(np.asarray(second), np.asarray(ours("another, longer prompt", seed=2,
                                                                          guidance_scale=7.5, **kw)))


def test_dropping_caption_padding_leaves_the_transformer_output_unchanged(ours):
    """The sampling paths drop the caption positions every row masks out (``prompts.drop_padding``); the DiT on
    the full 300 positions is the reference."""
    embeds, mask = ours.encode_prompt([PROMPT, "a"])
    short, short_mask = prompt_lib.drop_padding(embeds, mask)
    assert embeds.shape[1] == 300 and short.shape[1] == 32
    assert int(np.asarray(mask)[:, 32:].sum()) == 0 and int(np.asarray(short_mask).sum()) == int(np.asarray(mask).sum())
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 4, 16)), jnp.float32)
    t = jnp.asarray([500.0, 20.0])
    full, trimmed = ours.transformer(x, t, embeds, mask), ours.transformer(x, t, short, short_mask)
    np.testing.assert_allclose(np.asarray(trimmed), np.asarray(full), rtol=0, atol=1e-6)
    # every position some row attends to is kept; a mask valid to the end keeps all of them
    whole = jnp.ones((1, 300), jnp.int32)
    assert prompt_lib.drop_padding(embeds[:1], whole)[0].shape[1] == 300


@pytest.mark.parametrize("kwargs,match", [
    (dict(height=30), "height"), (dict(width=40), "multiples of 16"), (dict(frames=8), "frames=8"),
    (dict(output_type="pil"), "output_type"), (dict(latents=np.zeros((1, 3, 4, 4, 8))), "latents"),
    (dict(decode_frames=-1), "decode_frames=-1"), (dict(decode_frames=1.5), "decode_frames=1.5"),
    (dict(cfg_batched="no"), "cfg_batched='no'"),
])
def test_bad_sizes_and_options_are_named(ours, kwargs, match):
    args = {**SIZE, "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ours("x", **args)


def test_convert_round_trip_loads_in_diffusers_with_identical_weights(folder, tmp_path, ours):
    from diffusers import SanaVideoPipeline as TorchPipeline

    from convert.__main__ import main

    assert main(["to-jax", str(folder), str(tmp_path / "jax")]) == 0
    assert os.path.isfile(tmp_path / "jax" / "transformer" / "flax_params.safetensors")
    assert main(["to-torch", str(tmp_path / "jax"), str(tmp_path / "torch")]) == 0
    a, b = TorchPipeline.from_pretrained(folder), TorchPipeline.from_pretrained(tmp_path / "torch")
    for name in ("transformer", "text_encoder", "vae"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sorted(sa) == sorted(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    # The JAX folder samples exactly what the diffusers folder does.
    from_jax = SanaVideoPipeline.from_pretrained(tmp_path / "jax")
    kw = dict(num_inference_steps=2, output_type="latent", seed=3, **SIZE)
    np.testing.assert_array_equal(np.asarray(from_jax(PROMPT, **kw)), np.asarray(ours(PROMPT, **kw)))


def _sample(args, cwd):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_sample_py_writes_an_mp4_with_the_requested_frames_and_size(folder, tmp_path):
    import imageio.v3 as iio

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "clip.mp4"
    proc = _sample(["--model", str(folder), "--prompt", "a red circle", "--height", "32", "--width", "48",
                    "--frames", "13", "--steps", "2", "--out", str(out), "--offload-text-encoder",
                    "--decode-frames", "1", "--cfg-sequential"], repo)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    frames = iio.imread(out, plugin="pyav") if _has_pyav() else np.stack(list(_read_ffmpeg(out)))
    assert frames.shape == (13, 32, 48, 3)


def test_sample_py_errors_are_one_line_with_exit_code_2(folder, tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cases = [
        ["--model", str(folder), "--prompt", "x", "--image", str(tmp_path / "missing.png")],
        ["--model", str(tmp_path / "nowhere"), "--prompt", "x"],
        ["--model", str(folder), "--prompt", "x", "--out", str(tmp_path / "no_dir" / "v.mp4")],
        ["--model", str(folder), "--prompt", "x", "--stream", "--decode-frames", "1"],
        ["--model", str(folder), "--prompt", "x", "--stream", "--cfg-sequential"],
    ]
    for args in cases:
        proc = _sample([*args, "--out", str(tmp_path / "v.mp4")] if "--out" not in args else args, repo)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:"), proc.stderr
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".mp4") or f.startswith(".tmp")]


def _has_pyav():
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _read_ffmpeg(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        yield from reader
    finally:
        reader.close()


def test_dc_ae_pipeline_runs_where_diffusers_crashes(tmp_path):
    """A pipeline whose VAE is AutoencoderDC (32 -> 2x compression here, temporal 1): diffusers cannot build it."""
    from diffusers import AutoencoderDC, SanaVideoTransformer3DModel

    from sana_jax.testing.numerics import randomize_

    build_tiny_pipeline(tmp_path / "dc")
    vae = randomize_(AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407), seed=5)
    transformer = randomize_(SanaVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
        mlp_ratio=2.5, patch_size=(1, 2, 2), rope_max_seq_len=32), seed=6)
    import json
    import shutil

    shutil.rmtree(tmp_path / "dc" / "vae")
    shutil.rmtree(tmp_path / "dc" / "transformer")
    vae.save_pretrained(tmp_path / "dc" / "vae")
    transformer.save_pretrained(tmp_path / "dc" / "transformer")
    index = json.loads((tmp_path / "dc" / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderDC"]
    (tmp_path / "dc" / "model_index.json").write_text(json.dumps(index))

    pipe = SanaVideoPipeline.from_pretrained(tmp_path / "dc")
    kw = dict(height=8, width=12, frames=5, num_inference_steps=2, seed=0)
    latents = pipe("a red circle", output_type="latent", **kw)
    assert latents.shape == (1, 5, 4, 6, 4)
    video = pipe("a red circle", **kw)
    assert video.shape == (1, 5, 8, 12, 3)
    expected = np.round(np.clip(np.asarray(pipe.vae.decode(latents)) / 2 + 0.5, 0, 1) * 255)
    assert np.abs(video.astype(np.int16) - expected).max() <= 1
