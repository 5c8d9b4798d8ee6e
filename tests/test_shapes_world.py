"""The shapes world (`sana_jax.shapes.world`), its detector (`sana_jax.shapes.detect`) and the scores and CLI built
on it (`sana_jax.shapes.evaluate`), checked on ground truth."""

from __future__ import annotations

import itertools
import os
import re
import shutil

import numpy as np
import pytest

from sana_jax.shapes import evaluate as evaluation
from sana_jax.shapes import world
from sana_jax.shapes.detect import detect


def _gaussian_blur(video: np.ndarray, sigma: float) -> np.ndarray:
    """float64 (F, H, W, 3) separable Gaussian blur over H and W, wrapping like the torus world."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = video.astype(np.float64)
    for axis in (1, 2):
        out = sum(t * np.roll(out, shift, axis=axis) for shift, t in zip(range(-radius, radius + 1), taps))
    return out


def _degrade(video: np.ndarray, rng: np.random.Generator, sigma: float = 0.7, noise: float = 6.0) -> np.ndarray:
    """What a lossy VAE might do, mildly: blur plus Gaussian noise, back to uint8."""
    noisy = _gaussian_blur(video, sigma) + rng.normal(0.0, noise, video.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _clips(seeds=(0, 1, 2)):
    """Every combination under random nuisance for each seed, plus, per combination, one clip starting on an edge
    (so it wraps around the torus from frame 0)."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for combo in world.all_combinations():
            yield world.sample_clip(rng, [combo])
    rng = np.random.default_rng(99)
    for i, combo in enumerate(world.all_combinations()):
        corner = [(0.0, 0.0), (0.3, world.WIDTH - 0.4), (world.HEIGHT - 0.2, 15.0), (16.0, 0.5)][i % 4]
        yield world.Clip(*combo, centre=corner, radius=float(rng.uniform(*world.RADIUS)),
                         speed=float(rng.uniform(*world.SPEED)), background=world.BACKGROUNDS[i % 3])


def _misreads(videos_and_truth) -> list:
    wrong = []
    for video, clip in videos_and_truth:
        found = detect(video)
        read = (found.colour, found.shape, found.direction)
        if read != (clip.colour, clip.shape, clip.direction):
            wrong.append((clip, read))
    return wrong


# ------------------------------------------------------------------------------------------------- the world

def test_clips_are_a_function_of_seed_and_index():
    data = world.ShapesExamples(seed=3, num_examples=8)
    again = world.ShapesExamples(seed=3, num_examples=8)
    assert data.clip(5) == again.clip(5)
    np.testing.assert_array_equal(data[5]["video"], again[5]["video"])
    assert len({data.clip(i) for i in range(8)}) == 8
    assert world.ShapesExamples(seed=4, num_examples=8).clip(5) != data.clip(5)
    video = data[5]["video"]
    assert video.shape == (world.FRAMES, world.HEIGHT, world.WIDTH, 3) and video.dtype == np.float32
    assert -1.0 <= video.min() and video.max() <= 1.0


def test_held_out_is_twelve_combinations_disjoint_from_train_with_every_pair_trained():
    assert len(world.HELD_OUT) == 12 and len(world.TRAIN) == 48
    assert not set(world.HELD_OUT) & set(world.TRAIN)
    assert set(world.HELD_OUT) | set(world.TRAIN) == set(world.all_combinations())
    for (i, a), (j, b) in itertools.combinations(enumerate([list(world.COLOURS), world.SHAPES,
                                                            list(world.DIRECTIONS)]), 2):
        trained = {(c[i], c[j]) for c in world.TRAIN}
        assert trained == set(itertools.product(a, b)), f"attributes {i}, {j}: a pair never trained"


def test_train_examples_never_show_a_held_out_caption():
    held_out = {world.caption(*c) for c in world.HELD_OUT}
    data = world.ShapesExamples(seed=0, num_examples=600, split="train")
    captions = {data.clip(i).caption for i in range(600)}
    assert not captions & held_out
    assert len(captions) == 48                       # and they do cover the whole training split
    assert data[7]["caption"] == data.clip(7).caption
    held = world.ShapesExamples(seed=0, num_examples=100, split="held_out")
    assert {held.clip(i).caption for i in range(100)} <= held_out


def test_parse_caption_round_trips_and_names_bad_text():
    for combo in world.all_combinations():
        assert world.parse_caption(world.caption(*combo)) == combo
    assert world.parse_caption("  A Red Circle moving LEFT ") == ("red", "circle", "left")
    for bad in ("a red circle", "a pink circle moving left", "a red hexagon moving left",
                "a red circle moving sideways", "the red circle moving left", ""):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            world.parse_caption(bad)


# ------------------------------------------------------------------------------------------------- detector

def test_detector_reads_every_combination_from_clean_renders():
    clips = list(_clips())
    assert len(clips) == 4 * 60
    assert _misreads((world.render(c), c) for c in clips) == []


def test_detector_reads_every_combination_after_blur_and_noise():
    rng = np.random.default_rng(7)
    assert _misreads((_degrade(world.render(c), rng), c) for c in _clips(seeds=(10, 11))) == []


def test_detector_centres_and_velocity_follow_the_truth_across_the_edge():
    clip = world.Clip("blue", "square", "left", centre=(31.6, 2.0), radius=5.5, speed=1.1, background=(40, 40, 40))
    found = detect(world.render(clip))
    assert found.present.all()
    truth = np.array([clip.centre_at(f) for f in range(world.FRAMES)])
    error = (found.centres - truth + 16) % 32 - 16          # on the torus
    assert np.abs(error).max() < 0.35
    np.testing.assert_allclose(found.velocity, (0.0, -1.1), atol=0.05)


def test_detector_reads_a_down_moving_triangle_by_its_centroid():
    clip = world.Clip("yellow", "triangle", "down", centre=(30.0, 7.0), radius=6.0, speed=0.8,
                      background=(12, 12, 12))
    found = detect(world.render(clip))
    truth = np.array([clip.centre_at(f) for f in range(world.FRAMES)]) + [clip.radius / 3, 0.0]   # centroid
    assert np.abs((found.centres - truth + 16) % 32 - 16).max() < 0.5
    np.testing.assert_allclose(found.velocity, (0.8, 0.0), atol=0.05)
    assert found.shape_scores[world.SHAPES.index("triangle")] > 0.9


def test_plain_background_holds_no_object():
    rng = np.random.default_rng(0)
    for grey in world.BACKGROUNDS:
        plain = np.broadcast_to(np.asarray(grey, np.uint8), (world.FRAMES, 32, 32, 3))
        for video in (plain, _degrade(plain, rng)):
            found = detect(video)
            assert not found.present.any()
            assert (found.colour, found.shape, found.direction) == (None, None, None)
            assert np.isnan(found.centres).all()


def test_frames_without_the_object_are_skipped_not_fatal():
    clip = world.Clip("purple", "circle", "up", centre=(10.0, 20.0), radius=5.0, speed=1.0, background=(68, 68, 68))
    video = world.render(clip)
    video[[0, 5, 6, 12]] = clip.background
    found = detect(video)
    np.testing.assert_array_equal(~found.present, np.isin(np.arange(world.FRAMES), [0, 5, 6, 12]))
    assert (found.colour, found.shape, found.direction) == ("purple", "circle", "up")
    np.testing.assert_allclose(found.velocity, (-1.0, 0.0), atol=0.05)
    single = detect(video[:2])          # one frame with the object: no direction to read
    assert single.direction is None and single.colour == "purple"


def test_a_static_object_has_no_direction():
    clip = world.Clip("green", "square", "right", centre=(16.0, 16.0), radius=5.0, speed=0.0, background=(12, 12, 12))
    found = detect(world.render(clip))
    assert found.present.all() and found.direction is None and found.shape == "square"


def test_long_clip_is_read_window_by_window():
    clip = world.Clip("red", "triangle", "right", centre=(5.0, 30.0), radius=5.2, speed=1.2, background=(40, 40, 40))
    video = world.render(clip, frames=240)
    report = evaluation.score_windows(video, clip.caption)
    assert report["windows"] == 240 // 17 and report["frames"] == 240
    assert report["present"] == 1.0
    assert all(report[k] == 1.0 for k in ("colour", "shape", "direction", "all"))
    # A video that turns around halfway is right in about half of its windows.
    back = world.render(world.Clip("red", "triangle", "left", clip.centre_at(119), 5.2, 1.2, (40, 40, 40)), 120)
    turned = evaluation.score_windows(np.concatenate([video[:119], back]), clip.caption)
    assert turned["colour"] == turned["shape"] == 1.0
    assert 0.4 <= turned["direction"] <= 0.6


def test_long_frames_is_the_smallest_4k_plus_1_covering_the_time():
    assert evaluation.long_frames(30, 8) == 241
    assert evaluation.long_frames(1, 8) == 9
    assert evaluation.long_frames(2, 8) == 17
    assert evaluation.long_frames(0.1, 8) == 1


# ------------------------------------------------------------------------------------------------- evaluate

class _RenderingPipeline:
    """Stands in for SanaVideoPipeline: renders the caption's ground truth, with the direction of held-out
    combinations reversed so held-out direction accuracy is 0."""

    reverse = {"left": "right", "right": "left", "up": "down", "down": "up"}

    def __init__(self):
        self.calls = []

    def _clip(self, prompt, rng):
        colour, shape, direction = world.parse_caption(prompt)
        if (colour, shape, direction) in world.HELD_OUT:
            direction = self.reverse[direction]
        return world.sample_clip(rng, [(colour, shape, direction)])

    def __call__(self, prompts, *, height, width, frames, num_inference_steps, guidance_scale, seed):
        self.calls.append((len(prompts), seed))
        rng = np.random.default_rng(seed)
        return np.stack([world.render(self._clip(p, rng), frames, height, width) for p in prompts])

    def stream(self, prompts, *, height, width, frames, seed, block_frames=3, **_):
        prompts = [prompts] if isinstance(prompts, str) else prompts
        self.calls.append((len(prompts), seed))
        rng = np.random.default_rng(seed)
        clips = [self._clip(p, rng) for p in prompts]
        for start in range(0, frames, 4 * block_frames + 1):
            n = min(4 * block_frames + 1, frames - start)
            yield np.stack([world.render(c, n, height, width, start=start) for c in clips])


@pytest.mark.parametrize("stream", [False, True])
def test_evaluate_scores_each_split_and_attribute(stream):
    pipe = _RenderingPipeline()
    captions = [world.caption(*c) for c in world.HELD_OUT[:3] + world.TRAIN[:4]]
    report = evaluation.evaluate(pipe, captions, videos_per_caption=2, seed=5, batch_size=4, stream=stream,
                                 height=32, width=32, frames=17, num_inference_steps=2, guidance_scale=1.0)
    assert pipe.calls == [(4, 5), (4, 6), (4, 7), (2, 8)]
    held, train = report["splits"]["held_out"], report["splits"]["train"]
    assert held["colour"] == {"accuracy": 1.0, "correct": 6, "videos": 6}
    assert held["shape"]["accuracy"] == 1.0 and held["direction"]["accuracy"] == 0.0 and held["all"]["correct"] == 0
    assert all(train[k] == {"accuracy": 1.0, "correct": 8, "videos": 8} for k in ("colour", "shape", "direction",
                                                                                   "all"))
    assert len(report["videos"]) == 14 and report["videos"][0]["split"] == "held_out"
    table = evaluation.format_table(report)
    assert "| held_out | direction | 0.000 | 6 |" in table and "| train | all three | 1.000 | 8 |" in table


def test_evaluate_long_streams_and_scores_windows():
    pipe = _RenderingPipeline()
    report = evaluation.evaluate_long(pipe, world.caption(*world.TRAIN[0]), seconds=4, fps=8, seed=1,
                                      height=32, width=32, block_frames=2)
    assert report["frames"] == 33 and report["windows"] == 1 and report["all"] == 1.0
    held = evaluation.evaluate_long(pipe, world.caption(*world.HELD_OUT[0]), seconds=5, fps=8, seed=1,
                                    height=32, width=32)
    assert held["windows"] == 2 and held["direction"] == 0.0 and held["colour"] == 1.0


def test_detector_ignores_colour_casts_and_a_few_misread_frames():
    """Hue of object minus background survives darkening, desaturation and a tinted background; the robust track
    fit survives frames where the object jumps elsewhere."""
    rng = np.random.default_rng(3)
    for combo in world.all_combinations()[::2]:
        clip = world.sample_clip(rng, [combo])
        video = world.render(clip).astype(np.float64)
        grey = video.mean(axis=-1, keepdims=True)
        video = 0.8 * (0.6 * video + 0.4 * grey) + [8.0, 0.0, -6.0]      # darker, washed out, tinted
        video[[4, 11]] = np.roll(video[[4, 11]], (9, 13), axis=(1, 2))   # two frames misread far away
        found = detect(_degrade(np.clip(video, 0, 255), rng))
        assert (found.colour, found.shape, found.direction) == combo, clip


def test_cli_prints_the_table_and_long_video_lines(tmp_path, monkeypatch, capsys):
    import json

    from sana_jax import SanaVideoPipeline

    from sana_jax.shapes import DEMO_MODEL

    for part in ("transformer", "vae"):  # the CLI checks sizes against the folder's configs before loading
        (tmp_path / part).mkdir()
        shutil.copy(os.path.join(DEMO_MODEL, part, "config.json"), tmp_path / part / "config.json")
    (tmp_path / "sample_defaults.json").write_text(json.dumps(
        {"height": 32, "width": 32, "frames": 17, "steps": 2, "guidance": 1.0, "fps": 8, "stream": True,
         "block_frames": 2, "sampler": "few_step"}))
    pipe = _RenderingPipeline()
    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained",
                        classmethod(lambda cls, path, dtype, quantize=None, quantize_components=None: pipe))
    assert evaluation.main(["--model", str(tmp_path), "--split", "held_out", "--videos-per-caption", "1",
                            "--long-seconds", "5", "--long-captions", "1"]) == 0
    out = capsys.readouterr().out
    assert "| held_out | colour | 1.000 | 12 |" in out and "| held_out | direction | 0.000 | 12 |" in out
    assert "41 frames" in out and "over 2 windows" in out
    assert pipe.calls[:2] == [(8, 0), (4, 1)]
