"""Configs: strict JSON round trip, diffusers defaults, and the published 2B layouts built abstractly."""

import dataclasses
import inspect
import json

import numpy as np
import pytest
from diffusers import SanaVideoTransformer3DModel

from sana_jax.components import REGISTRY, abstract_params
from sana_jax.config import SANA_VIDEO_2B_480P, SANA_VIDEO_2B_720P, ConfigError, SanaVideoTransformerConfig
from sana_jax.weights.rulebook import flatten


def test_defaults_are_diffusers_defaults():
    # diffusers' register_to_config records every __init__ default; ours must be the same values.
    sig = inspect.signature(SanaVideoTransformer3DModel.__init__)
    theirs = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    ours = {f.name: f.default for f in dataclasses.fields(SanaVideoTransformerConfig)}
    assert set(theirs) == set(ours)
    for key in theirs:
        assert list(np.atleast_1d(theirs[key])) == list(np.atleast_1d(ours[key])), key


def test_json_round_trip_and_diffusers_reads_what_we_write(tmp_path):
    path = tmp_path / "config.json"
    SANA_VIDEO_2B_720P.to_json_file(path)
    assert SanaVideoTransformerConfig.from_json_file(path) == SANA_VIDEO_2B_720P
    theirs = SanaVideoTransformer3DModel.load_config(tmp_path)
    assert theirs["patch_size"] == [1, 1, 1] and theirs["in_channels"] == 128


@pytest.mark.parametrize("key,value,match", [
    ("num_layer", 3, "unknown key.*num_layer"),
    ("num_layers", "20", "num_layers"),
    ("patch_size", [1, 2], "patch_size"),
    ("qk_norm", "layer_norm", "qk_norm"),
])
def test_bad_config_keys_are_named(tmp_path, key, value, match):
    data = SANA_VIDEO_2B_480P.to_dict()
    data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match):
        SanaVideoTransformerConfig.from_json_file(tmp_path / "config.json")


@pytest.mark.parametrize("config,expected", [(SANA_VIDEO_2B_480P, 2_056_862_144), (SANA_VIDEO_2B_720P, 2_057_148_928)])
@pytest.mark.parametrize("scan", [False, True])
def test_published_configs_build_abstractly_with_exact_parameter_counts(config, expected, scan):
    spec = REGISTRY[config.class_name]
    params = abstract_params(spec, config, spec.build(config, scan_layers=scan))
    count = sum(int(np.prod(v.shape)) for v in flatten(params).values())
    print(f"{config.patch} {config.in_channels}ch: {count:,} params")
    assert count == expected == _diffusers_count(config)


def _diffusers_count(config) -> int:
    """diffusers' own parameter count of the same config, built on the meta device (nothing allocated)."""
    import torch

    with torch.device("meta"):
        reference = SanaVideoTransformer3DModel(**{k: v for k, v in config.to_dict().items() if not k.startswith("_")})
    return sum(p.numel() for p in reference.parameters())
