"""Training data: order and sharding across processes, exact resume, PyAV decoding, skipping, the latent cache."""

from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np
import pytest

from sana_jax.training.data import (DataConfigError, LatentCacheWriter, make_iterator, null_text,
                                    precompute_latent_cache)

TOL = 3 / 127.5      # near-lossless H.264 (qp 0, yuv444p) moves a uint8 value by at most ~2 levels


# ---------------------------------------------------------------------------------------------------------------
# helpers

def synthetic_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = dict(source="synthetic", seed=3, shuffle=True, num_workers=0, prefetch=2, num_examples=10,
               latent_shape=(2, 4, 4, 3), text_length=6, text_dim=5)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def manifest_cfg(path, **overrides) -> ml_collections.ConfigDict:
    cfg = dict(source="manifest", path=str(path), seed=1, shuffle=True, num_workers=0, prefetch=1, height=16,
               width=16, frames=5, fps=16)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def cache_cfg(path, **overrides) -> ml_collections.ConfigDict:
    cfg = dict(source="latent_cache", path=str(path), seed=5, shuffle=True, num_workers=0, prefetch=2)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def write_mp4(path, frames: np.ndarray, fps: int) -> None:
    """Near-lossless H.264 (qp 0, no chroma subsampling), so decoded values are checkable to ~2 levels."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv444p", macro_block_size=1, ffmpeg_log_level="error",
                                output_params=["-qp", "0"])
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def index_clip(num_frames: int, height: int = 16, width: int = 16, base: int = 10, step: int = 12) -> np.ndarray:
    """uint8 frames whose blue channel tells the source frame index: base + step * k."""
    frames = np.full((num_frames, height, width, 3), 128, np.uint8)
    frames[..., 2] = (base + step * np.arange(num_frames))[:, None, None]
    return frames


def write_manifest(folder, entries: list[dict]) -> str:
    path = os.path.join(folder, "manifest.jsonl")
    with open(path, "w") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    return path


@pytest.fixture
def patchy_manifest(tmp_path):
    """Five entries: three readable 9-frame clips, a corrupt file and a missing one (relative paths)."""
    for i, name in enumerate(("a", "b", "c")):
        write_mp4(tmp_path / f"{name}.mp4", index_clip(9, base=10 + 60 * i, step=5), fps=16)
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(2048))
    return write_manifest(tmp_path, [
        {"video": "a.mp4", "caption": "clip a"}, {"video": "corrupt.mp4", "caption": "corrupt"},
        {"video": "b.mp4", "caption": "clip b"}, {"video": "missing.mp4", "caption": "missing"},
        {"video": "c.mp4", "caption": "clip c"}])


def write_id_cache(folder, num_records: int, *, records_per_shard: int = 4) -> str:
    """A latent cache whose record i has latents filled with i (and random embeddings), several shards."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    writer = LatentCacheWriter(str(folder), records_per_shard=records_per_shard)
    for i in range(num_records):
        writer.write(latents=np.full((2, 2, 2, 4), i, np.float32),
                     text_embeds=rng.normal(size=(3, 5)).astype(np.float32),
                     text_mask=(np.arange(3) <= i % 3).astype(np.int32), caption=f"record {i}")
    writer.close(null_embeds=rng.normal(size=(3, 5)), null_mask=np.array([1, 0, 0]))
    return str(folder)


def record_ids(batch: dict) -> list[int]:
    return [int(x) for x in batch["latents"][:, 0, 0, 0, 0]]


# ---------------------------------------------------------------------------------------------------------------
# order and sharding

@pytest.mark.parametrize("process_count", [2, 4])
@pytest.mark.parametrize("source", ["synthetic", "latent_cache"])
def test_process_batches_concatenated_equal_the_single_process_batch(tmp_path, source, process_count):
    cfg = synthetic_cfg() if source == "synthetic" else cache_cfg(write_id_cache(tmp_path / "cache", 10))
    steps, batch_size = 7, 4                     # 28 rows of a 10-record data set: three epochs
    single = take(make_iterator(cfg, batch_size=batch_size), steps)
    parts = [take(make_iterator(cfg, batch_size=batch_size, process_index=p, process_count=process_count), steps)
             for p in range(process_count)]
    for step in range(steps):
        for key, value in single[step].items():
            assert parts[0][step][key].shape[0] == batch_size // process_count
            np.testing.assert_array_equal(np.concatenate([part[step][key] for part in parts]), value)


def test_every_record_appears_once_per_epoch_and_epochs_are_reshuffled(tmp_path):
    num_records, batch_size = 10, 4              # epochs straddle batches
    cfg = cache_cfg(write_id_cache(tmp_path / "cache", num_records))
    stream = [i for batch in take(make_iterator(cfg, batch_size=batch_size), 10) for i in record_ids(batch)]
    epochs = [stream[e * num_records:(e + 1) * num_records] for e in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(num_records))
    assert len({tuple(epoch) for epoch in epochs}) == len(epochs)
    assert epochs[0] != list(range(num_records))

    ordered = make_iterator(cache_cfg(cfg.path, shuffle=False), batch_size=batch_size)
    stream = [i for batch in take(ordered, 5) for i in record_ids(batch)]
    assert stream == list(range(num_records)) * 2


def test_synthetic_records_depend_on_seed_and_index_only():
    a = take(make_iterator(synthetic_cfg(shuffle=False), batch_size=2), 2)
    b = take(make_iterator(synthetic_cfg(shuffle=False), batch_size=4), 1)
    for key in a[0]:
        np.testing.assert_array_equal(np.concatenate([a[0][key], a[1][key]]), b[0][key])
    other = next(make_iterator(synthetic_cfg(shuffle=False, seed=4), batch_size=4))
    assert not np.allclose(other["latents"], b[0]["latents"])
    mask = b[0]["text_mask"]
    assert mask.dtype == np.int32 and (mask.sum(1) >= 1).all() and len(set(mask.sum(1))) > 1
    embeds, null_mask = null_text(synthetic_cfg())
    assert embeds.shape == (6, 5) and embeds.dtype == np.float32 and null_mask.tolist() == [1, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(embeds, null_text(synthetic_cfg())[0])


# ---------------------------------------------------------------------------------------------------------------
# resume

def test_resume_from_state_gives_the_uninterrupted_synthetic_batches():
    cfg = synthetic_cfg()
    reference = take(make_iterator(cfg, batch_size=4, process_index=1, process_count=2), 9)
    it = make_iterator(cfg, batch_size=4, process_index=1, process_count=2)
    take(it, 4)
    state = json.loads(json.dumps(it.get_state()))
    fresh = make_iterator(cfg, batch_size=4, process_index=1, process_count=2)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 5), reference[4:])
    with pytest.raises(ValueError, match="process_count"):
        make_iterator(cfg, batch_size=4, process_count=1).set_state(state)


def test_resume_from_state_gives_the_uninterrupted_manifest_batches_and_skip_count(patchy_manifest, caplog):
    cfg = manifest_cfg(patchy_manifest)
    reference_it = make_iterator(cfg, batch_size=2)
    reference = take(reference_it, 6)
    it = make_iterator(cfg, batch_size=2)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    fresh = make_iterator(cfg, batch_size=2)
    fresh.set_state(state)
    assert fresh.skipped == it.skipped
    assert_batches_equal(take(fresh, 3), reference[3:])
    assert fresh.skipped == reference_it.skipped > 0


def test_worker_processes_give_the_in_process_batches_and_skip_count(patchy_manifest):
    cfg = manifest_cfg(patchy_manifest)
    in_process = make_iterator(cfg, batch_size=2)
    reference = take(in_process, 5)
    with make_iterator(manifest_cfg(patchy_manifest, num_workers=2), batch_size=2) as workers:
        assert_batches_equal(take(workers, 2), reference[:2])
        state = workers.get_state()
    with make_iterator(manifest_cfg(patchy_manifest, num_workers=2), batch_size=2) as resumed:
        resumed.set_state(state)
        assert_batches_equal(take(resumed, 3), reference[2:])
        assert resumed.skipped == in_process.skipped > 0


# ---------------------------------------------------------------------------------------------------------------
# manifest decoding

@pytest.mark.parametrize("fps", [16, 8, 5])
def test_manifest_clip_takes_the_source_frame_nearest_each_target_time(tmp_path, fps):
    source_fps, frames = 16, 5
    write_mp4(tmp_path / "ramp.mp4", index_clip(16, step=15), fps=source_fps)
    path = write_manifest(tmp_path, [{"video": "ramp.mp4", "caption": "ramp"}])
    video = next(make_iterator(manifest_cfg(path, fps=fps, frames=frames), batch_size=1))["video"][0]
    # nearest source frame to t = k / fps; the chosen fps have no ties
    expected_index = np.rint(np.arange(frames) / fps * source_fps)
    expected_blue = (10 + 15 * expected_index) / 127.5 - 1
    np.testing.assert_allclose(video[:, :, :, 2].mean((1, 2)), expected_blue, atol=TOL)
    assert video.shape == (frames, 16, 16, 3) and video.dtype == np.float32


def test_manifest_clip_is_resized_to_cover_then_centre_cropped(tmp_path):
    # 64 x 32 clip -> 16 x 16: scale 1/2 (the short side covers), 32 x 16, then the centre 16 columns.
    h, w = 32, 64
    frames = np.zeros((9, h, w, 3), np.uint8)
    frames[..., 0] = (4 * np.arange(w) + 2)[None, None, :]      # red ramps left -> right
    frames[..., 1] = (6 * np.arange(h) + 20)[None, :, None]     # green ramps top -> bottom
    write_mp4(tmp_path / "wide.mp4", frames, fps=16)
    path = write_manifest(tmp_path, [{"video": "wide.mp4", "caption": "wide"}])
    video = next(make_iterator(manifest_cfg(path), batch_size=1))["video"][0]
    # Bicubic reproduces a linear ramp: output pixel j samples source x = (j + crop_left + 1/2) / scale - 1/2.
    j = np.arange(16)
    red = 4 * ((j + 8 + 0.5) * 2 - 0.5) + 2                      # crop_left = (32 - 16) // 2 = 8
    green = 6 * ((j + 0.5) * 2 - 0.5) + 20                       # no vertical crop
    np.testing.assert_allclose(video[..., 0], np.broadcast_to(red / 127.5 - 1, video.shape[:3]), atol=TOL)
    np.testing.assert_allclose(video[..., 1], np.broadcast_to((green / 127.5 - 1)[:, None], video.shape[:3]),
                               atol=TOL)


def test_image_entry_is_a_one_frame_clip_and_unusable_for_longer_clips(tmp_path, caplog):
    from PIL import Image

    image = np.zeros((24, 16, 3), np.uint8)                      # tall: crop 4 rows from top and bottom
    image[..., 0] = (10 * np.arange(24))[:, None]
    Image.fromarray(image).save(tmp_path / "tall.png")
    write_mp4(tmp_path / "clip.mp4", index_clip(9), fps=16)
    path = write_manifest(tmp_path, [{"image": "tall.png", "caption": "still"},
                                     {"video": "clip.mp4", "caption": "moving"}])
    still = next(make_iterator(manifest_cfg(path, frames=1, shuffle=False), batch_size=1))
    assert still["video"].shape == (1, 1, 16, 16, 3) and still["caption"].tolist() == ["still"]
    np.testing.assert_allclose(still["video"][0, 0], image[4:20] / 127.5 - 1, atol=1e-6)

    it = make_iterator(manifest_cfg(path, frames=5, shuffle=False), batch_size=2)
    with caplog.at_level(logging.WARNING):
        batch = next(it)
    assert batch["caption"].tolist() == ["moving", "moving"] and it.skipped == 2
    assert "tall.png" in caplog.text and "frames == 1" in caplog.text


def test_corrupt_missing_and_too_short_files_are_skipped_counted_and_logged(tmp_path, caplog):
    write_mp4(tmp_path / "good1.mp4", index_clip(9), fps=16)
    write_mp4(tmp_path / "good2.mp4", index_clip(9, base=100), fps=16)
    write_mp4(tmp_path / "short.mp4", index_clip(4), fps=16)      # 5 frames at 16 fps need 5 source frames
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(1).bytes(999))
    readable = [True, False, False, True, False]
    path = write_manifest(tmp_path, [
        {"video": "good1.mp4", "caption": "one"}, {"video": "corrupt.mp4", "caption": "x"},
        {"video": "missing.mp4", "caption": "x"}, {"video": "good2.mp4", "caption": "two"},
        {"video": "short.mp4", "caption": "x"}])
    it = make_iterator(manifest_cfg(path, shuffle=False), batch_size=2)
    with caplog.at_level(logging.WARNING):
        batches = take(it, 3)
    for batch in batches:
        assert batch["video"].shape == (2, 5, 16, 16, 3) and batch["caption"].tolist() == ["one", "two"]
    # records 0..4 repeat in order; count the unreadable ones before the 6th readable one
    seen = good = 0
    while good < 6:
        good += readable[seen % 5]
        seen += 1
    assert it.skipped == seen - good == 8
    for name, reason in (("corrupt.mp4", "Error"), ("missing.mp4", "No such file"), ("short.mp4", "too short")):
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records), name


# ---------------------------------------------------------------------------------------------------------------
# precompute -> latent cache

@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    from sana_jax.testing.pipelines import build_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny_pipeline")
    build_tiny_pipeline(path)
    return path


@pytest.fixture(scope="module")
def tiny_pipe(tiny_pipeline_dir):
    from sana_jax import SanaVideoPipeline

    return SanaVideoPipeline.from_pretrained(tiny_pipeline_dir)


def test_precompute_round_trip_equals_vae_and_text_encoder_outputs(tmp_path, tiny_pipe, capsys):

    for i in range(3):
        write_mp4(tmp_path / f"v{i}.mp4", index_clip(9, base=20 + 50 * i, step=10), fps=16)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    captions = ["a red circle moving left", "a small cat", "the quick brown fox"]
    entries = [{"video": f"v{i}.mp4", "caption": c} for i, c in enumerate(captions)]
    manifest = write_manifest(tmp_path, entries[:1] + [{"video": "bad.mp4", "caption": "x"}] + entries[1:])
    out = tmp_path / "cache"
    metadata = precompute_latent_cache(manifest, tiny_pipe, out, height=16, width=16, frames=5, fps=16,
                                       batch_size=2, records_per_shard=2)
    assert f"to {out}" in capsys.readouterr().out
    assert metadata["count"] == 3 and metadata["skipped"] == 1 and len(metadata["shards"]) == 2
    assert json.loads((out / "metadata.json").read_text()) == metadata

    cached = next(make_iterator(cache_cfg(out, shuffle=False), batch_size=3))
    videos = next(make_iterator(manifest_cfg(manifest, shuffle=False), batch_size=3))   # skips bad.mp4 too
    assert videos["caption"].tolist() == captions
    latents = np.stack([np.asarray(tiny_pipe.encode_video(v[None]))[0] for v in videos["video"]])
    embeds, mask = tiny_pipe.encode_prompt(captions)
    np.testing.assert_allclose(cached["latents"], latents, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cached["text_embeds"], np.asarray(embeds), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(cached["text_mask"], np.asarray(mask))
    null_embeds, null_mask = tiny_pipe.encode_prompt([""], negative=True)
    got_embeds, got_mask = null_text(cache_cfg(out))
    np.testing.assert_allclose(got_embeds, np.asarray(null_embeds)[0], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got_mask, np.asarray(null_mask)[0])


def test_precompute_cli_with_no_readable_entry_is_an_error_and_leaves_no_folder(tmp_path, tiny_pipeline_dir,
                                                                                capsys):
    from sana_jax.training.precompute import main

    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    manifest = write_manifest(tmp_path, [{"video": "bad.mp4", "caption": "x"}, {"video": "gone.mp4", "caption": "y"}])
    before = set(os.listdir(tmp_path))
    assert main(["--pipeline", str(tiny_pipeline_dir), "--manifest", manifest, "--out", str(tmp_path / "cache"),
                 "--height", "16", "--width", "16", "--frames", "5", "--fps", "16"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error:") and "none of its 2 entries" in last
    assert set(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------------------------------------------------------
# config errors

@pytest.mark.parametrize("change, key", [
    (dict(source=None), "data.source"),
    (dict(source="webdataset"), "data.source"),
    (dict(text_dim=None), "data.text_dim"),
    (dict(latent_shape=(2, 4, 4)), "data.latent_shape"),
    (dict(num_workers=-1), "data.num_workers"),
    (dict(shuffle="yes"), "data.shuffle"),
    (dict(num_worker=2), "data.num_worker"),
])
def test_bad_data_config_is_an_error_naming_the_key(change, key):
    cfg = synthetic_cfg(**{k: v for k, v in change.items() if v is not None})
    for k, v in change.items():
        if v is None:
            del cfg[k]
    with pytest.raises(DataConfigError, match=key.replace(".", r"\.")):
        make_iterator(cfg, batch_size=4)


def test_batch_size_not_divisible_by_process_count_is_an_error():
    with pytest.raises(ValueError, match="batch_size=6.*process_count=4"):
        make_iterator(synthetic_cfg(), batch_size=6, process_count=4, process_index=0)
