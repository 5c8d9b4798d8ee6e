"""The shapes evaluation's outputs (`sana_jax.shapes.evaluate`): the contact sheet, the long-video captions and
summary, and the CLI's `--sheet` / `--json` flags, on rendered ground truth (no model is sampled)."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFont

from sana_jax import SanaVideoPipeline
from sana_jax.shapes import evaluate as evaluation
from sana_jax.shapes import world


def _clip_video(combo, frames: int, seed: int = 0) -> np.ndarray:
    return world.render(world.sample_clip(np.random.default_rng(seed), [combo]), frames)


class _RenderingPipeline:
    """Stands in for SanaVideoPipeline: every prompt is rendered as its own ground truth."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, *, height, width, frames, seed, **_):
        self.calls.append((len(prompts), seed))
        rng = np.random.default_rng(seed)
        return np.stack([world.render(world.sample_clip(rng, [world.parse_caption(p)]), frames, height, width)
                         for p in prompts])

    def stream(self, prompts, *, height, width, frames, seed, block_frames=2, **_):
        prompts = [prompts] if isinstance(prompts, str) else prompts
        self.calls.append((len(prompts), seed))
        rng = np.random.default_rng(seed)
        clips = [world.sample_clip(rng, [world.parse_caption(p)]) for p in prompts]
        for start in range(0, frames, 4 * block_frames + 1):
            n = min(4 * block_frames + 1, frames - start)
            yield np.stack([world.render(c, n, height, width, start=start) for c in clips])


def _model_folder(tmp_path) -> str:
    """A folder with the demo model's configs and small sample defaults: enough for the CLI's checks."""
    from sana_jax.shapes import DEMO_MODEL

    folder = tmp_path / "model"
    for part in ("transformer", "vae"):
        (folder / part).mkdir(parents=True)
        shutil.copy(os.path.join(DEMO_MODEL, part, "config.json"), folder / part / "config.json")
    (folder / "sample_defaults.json").write_text(json.dumps(
        {"height": 32, "width": 32, "frames": 17, "steps": 2, "guidance": 1.0, "fps": 8, "stream": True,
         "block_frames": 2, "sampler": "few_step"}))
    return str(folder)


# ------------------------------------------------------------------------------------------------- contact sheet

def test_contact_sheet_layout_and_pixels_are_the_upscaled_frames(tmp_path):
    short = _clip_video(world.HELD_OUT[0], 17, seed=1)
    long = _clip_video(world.TRAIN[5], 41, seed=2)
    rows = [("a short one", short), ("a long one, 5.1 s", long)]
    path = tmp_path / "sheet.png"
    evaluation.contact_sheet(rows, path, frames_per_row=5, scale=3)

    # Expected layout, written out from the documented rule rather than read from the function.
    font = ImageFont.load_default()
    label_width = max(math.ceil(font.getbbox(label)[2]) for label, _ in rows) + 2 * evaluation.SHEET_PAD
    cell = 32 * 3
    row_height = max(cell, math.ceil(max(font.getbbox(label)[3] for label, _ in rows)))
    gap, pad = evaluation.SHEET_GAP, evaluation.SHEET_PAD
    with Image.open(path) as image:
        assert image.format == "PNG"
        sheet = np.asarray(image.convert("RGB"))
    assert sheet.shape == (2 * pad + 2 * row_height + gap, label_width + 5 * cell + 4 * gap + pad, 3)
    for r, (video, indices) in enumerate(((short, [0, 4, 8, 12, 16]), (long, [0, 10, 20, 30, 40]))):
        top = pad + r * (row_height + gap)
        for j, index in enumerate(indices):
            left = label_width + j * (cell + gap)
            expected = np.kron(video[index], np.ones((3, 3, 1), np.uint8))   # nearest-neighbour upscale
            np.testing.assert_array_equal(sheet[top:top + cell, left:left + cell], expected)
    assert (sheet[pad:pad + row_height, pad:label_width - pad] < 128).any()   # the label is drawn
    assert not [p for p in os.listdir(tmp_path) if p != "sheet.png"]          # no temporary left behind


def test_contact_sheet_takes_every_frame_of_a_video_shorter_than_a_row(tmp_path):
    video = _clip_video(world.TRAIN[0], 3)
    evaluation.contact_sheet([("three", video)], tmp_path / "s.png", frames_per_row=9, scale=1)
    with Image.open(tmp_path / "s.png") as image:
        sheet = np.asarray(image.convert("RGB"))
    font = ImageFont.load_default()
    label_width = math.ceil(font.getbbox("three")[2]) + 2 * evaluation.SHEET_PAD
    assert sheet.shape[1] == label_width + 3 * 32 + 2 * evaluation.SHEET_GAP + evaluation.SHEET_PAD
    top = evaluation.SHEET_PAD
    for j in range(3):
        left = label_width + j * (32 + evaluation.SHEET_GAP)
        np.testing.assert_array_equal(sheet[top:top + 32, left:left + 32], video[j])


@pytest.mark.parametrize("rows, kwargs, named", [
    ([], {}, "rows"),
    ([("float", np.zeros((4, 8, 8, 3), np.float32))], {}, "rows[0]"),
    ([("ok", np.zeros((4, 8, 8, 3), np.uint8)), ("no frames axis", np.zeros((8, 8, 3), np.uint8))], {}, "rows[1]"),
    ([("rgba", np.zeros((4, 8, 8, 4), np.uint8))], {}, "rows[0]"),
    ([("empty", np.zeros((0, 8, 8, 3), np.uint8))], {}, "rows[0]"),
    ([("ok", np.zeros((4, 8, 8, 3), np.uint8))], {"frames_per_row": 0}, "frames_per_row"),
    ([("ok", np.zeros((4, 8, 8, 3), np.uint8))], {"scale": 0}, "scale"),
])
def test_contact_sheet_rejects_bad_input_naming_the_argument(rows, kwargs, named, tmp_path):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        evaluation.contact_sheet(rows, tmp_path / "s.png", **kwargs)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------- long videos

def test_long_captions_alternate_held_out_and_seen_without_repeats():
    captions = evaluation.long_captions(12)
    combos = [world.parse_caption(c) for c in captions]
    assert combos[0::2] == list(world.HELD_OUT[:6]) and combos[1::2] == list(world.TRAIN[:6])
    assert len(set(combos)) == 12
    every = [world.parse_caption(c) for c in evaluation.long_captions(60)]
    assert sorted(every) == sorted(world.all_combinations())
    assert every[:24:2] == list(world.HELD_OUT) and every[24:] == list(world.TRAIN[12:])
    assert evaluation.long_captions(1) == [world.caption(*world.HELD_OUT[0])]
    for bad in (0, 61):
        with pytest.raises(ValueError, match=f"n={bad}"):
            evaluation.long_captions(bad)


def test_long_summary_is_one_markdown_row_per_prompt_and_the_minimum_line():
    held, seen = world.caption(*world.HELD_OUT[0]), world.caption(*world.TRAIN[0])
    reports = [
        {"caption": held, "frames": 241, "windows": 14, "present": 1.0, "colour": 0.5, "shape": 1.0,
         "direction": 0.25, "all": 0.125, "seconds": 30.1},
        {"caption": seen, "frames": 241, "windows": 14, "present": 0.875, "colour": 1.0, "shape": 0.75,
         "direction": 1.0, "all": 0.75, "seconds": 30.1},
    ]
    lines = evaluation.format_long_summary(reports).splitlines()
    assert lines[0] == "| caption | split | frames | present | colour | shape | direction | all three |"
    assert lines[1] == "|---|---|---|---|---|---|---|---|"
    assert lines[2] == f"| {held} | held_out | 241 | 100.0% | 50.0% | 100.0% | 25.0% | 12.5% |"
    assert lines[3] == f"| {seen} | train | 241 | 87.5% | 100.0% | 75.0% | 100.0% | 75.0% |"
    assert lines[4] == "minimum over 2 prompts: present 87.5%, colour 50.0%, shape 75.0%, direction 25.0%"
    assert len(lines) == 5


# ------------------------------------------------------------------------------------------------- CLI

def _run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("loaded")))
    try:
        code = evaluation.main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("sheet", ["no_such_folder/sheet.png", "sheet.jpg", "."])
def test_cli_rejects_a_bad_sheet_path_before_loading_a_model(sheet, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run_cli(["--model", _model_folder(tmp_path), "--sheet", sheet], capsys, monkeypatch)
    assert code == 2 and "error: --sheet" in err and "Traceback" not in err


def test_cli_rejects_a_json_path_in_a_missing_folder_and_too_many_long_captions(tmp_path, capsys, monkeypatch):
    model = _model_folder(tmp_path)
    code, err = _run_cli(["--model", model, "--json", str(tmp_path / "nope" / "r.json")], capsys, monkeypatch)
    assert code == 2 and "error: --json" in err
    code, err = _run_cli(["--model", model, "--long-captions", "61"], capsys, monkeypatch)
    assert code == 2 and "error: --long-captions 61" in err


def test_cli_writes_sheet_json_and_long_summary(tmp_path, capsys, monkeypatch):
    pipe = _RenderingPipeline()
    monkeypatch.setattr(SanaVideoPipeline, "from_pretrained",
                        classmethod(lambda cls, path, dtype, quantize=None, quantize_components=None: pipe))
    sheet, record = tmp_path / "sheet.png", tmp_path / "report.json"
    assert evaluation.main(["--model", _model_folder(tmp_path), "--split", "held_out", "--videos-per-caption", "1",
                            "--long-seconds", "3", "--long-captions", "4", "--sheet", str(sheet),
                            "--json", str(record)]) == 0
    out = capsys.readouterr().out
    long = evaluation.long_captions(4)
    assert all(f"| {c} | {s} | 25 |" in out for c, s in zip(long, ["held_out", "train"] * 2))
    assert "minimum over 4 prompts: present 100.0%" in out
    with Image.open(sheet) as image:
        height = image.height
    font = ImageFont.load_default()
    text = max(math.ceil(font.getbbox(c)[3]) for c in long)
    assert height == 2 * evaluation.SHEET_PAD + 16 * max(64, text) + 15 * evaluation.SHEET_GAP   # 12 + 4 rows
    data = json.loads(record.read_text())
    assert data["splits"]["held_out"]["colour"]["videos"] == 12
    assert [r["caption"] for r in data["long"]] == long and "video" not in data["long"][0]
    assert "first_videos" not in data and len(data["videos"]) == 12
