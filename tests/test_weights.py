"""Weight conversion: diffusers <-> JAX round trips, the original NVlabs layout, sharded files, and bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import SanaVideoTransformer3DModel

from sana_jax.testing.numerics import rel_err
from sana_jax import load_component, save_component
from sana_jax._io import WeightFileError, read_safetensors
from sana_jax.config import ConfigError, SanaVideoTransformerConfig
from sana_jax.weights.io import read_state_dict
from sana_jax.weights.rulebook import WeightMappingError
from sana_jax.testing.references import TRANSFORMER_TINY as TINY
from sana_jax.testing.references import make_transformer_reference as make_reference
from sana_jax.testing.references import run_transformer_reference as run_reference
from sana_jax.testing.references import transformer_inputs as inputs


def assert_same_diffusers_model(a, b, x, t, ctx):
    """Bit-equal weights as diffusers loaded them; outputs equal up to torch's own run-to-run kernel choices
    (two loads of bit-equal weights can differ by 1 ulp on CPU)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
    assert rel_err(run_reference(a, x, t, ctx), run_reference(b, x, t, ctx)) <= 1e-6


def _tensors(folder):
    return read_state_dict(folder, "diffusion_pytorch_model")


@pytest.mark.parametrize("scan", [False, True])
def test_diffusers_to_jax_to_diffusers_is_bit_exact_and_loads_in_diffusers(tmp_path, scan):
    ref_model, folder = make_reference(tmp_path)
    model = load_component(folder, scan_layers=scan)
    save_component(model, tmp_path / "jax", format="jax")
    again = load_component(tmp_path / "jax", scan_layers=not scan)
    save_component(again, tmp_path / "back", format="diffusers")

    original, back = _tensors(folder), _tensors(tmp_path / "back")
    assert sorted(original) == sorted(back)
    for key in original:
        assert original[key].dtype == back[key].dtype and np.array_equal(original[key], back[key]), key
    with open(folder / "config.json") as f1, open(tmp_path / "back" / "config.json") as f2:
        a, b = json.load(f1), json.load(f2)
    assert {k: v for k, v in a.items() if not k.startswith("_")} == \
        {k: v for k, v in b.items() if not k.startswith("_")}

    # diffusers loads the written folder and computes exactly what it computes from the original folder.
    reloaded = SanaVideoTransformer3DModel.from_pretrained(tmp_path / "back").eval()
    original_model = SanaVideoTransformer3DModel.from_pretrained(folder).eval()
    x, t, ctx = inputs(0, 1, 2, 4, 4, 16)
    assert_same_diffusers_model(reloaded, original_model, x, t, ctx)


def test_bf16_weights_keep_their_dtype_through_the_round_trip(tmp_path):
    model = SanaVideoTransformer3DModel(**TINY).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    ours = load_component(tmp_path / "bf16")
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(ours.params))
    save_component(ours, tmp_path / "out")
    a, b = _tensors(tmp_path / "bf16"), _tensors(tmp_path / "out")
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key].view(np.uint16), b[key].view(np.uint16))


def test_sharded_safetensors_read_and_write(tmp_path):
    ref_model, folder = make_reference(tmp_path)
    ref_model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")  # diffusers' own sharded layout
    assert os.path.exists(tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json")
    model = load_component(tmp_path / "sharded")
    x, t, ctx = inputs(1, 1, 2, 4, 4, 16)
    ref = run_reference(ref_model, x, t, ctx)
    assert rel_err(np.asarray(model(jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))), ref) <= 1e-5
    save_component(model, tmp_path / "ours_sharded", max_shard_bytes=30_000)
    files = os.listdir(tmp_path / "ours_sharded")
    assert "diffusion_pytorch_model.safetensors.index.json" in files and len(files) > 3
    reloaded = SanaVideoTransformer3DModel.from_pretrained(tmp_path / "ours_sharded").eval()
    original_model = SanaVideoTransformer3DModel.from_pretrained(folder).eval()
    assert_same_diffusers_model(reloaded, original_model, x, t, ctx)


def _to_original_layout(state):
    """The NVlabs key layout, written independently from the reference notes' key table."""
    out = {"y_embedder.y_embedding": torch.randn(300, 32), "pos_embed": torch.zeros(1),
           "logvar_linear.weight": torch.randn(1, 24), "logvar_linear.bias": torch.randn(1)}
    simple = {
        "patch_embedding": "x_embedder.proj", "caption_projection.linear_1": "y_embedder.y_proj.fc1",
        "caption_projection.linear_2": "y_embedder.y_proj.fc2",
        "time_embed.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "time_embed.emb.timestep_embedder.linear_2": "t_embedder.mlp.2", "time_embed.linear": "t_block.1",
        "caption_norm": "attention_y_norm", "proj_out": "final_layer.linear",
    }
    for new, old in simple.items():
        for p in ("weight", "bias"):
            if f"{new}.{p}" in state:
                out[f"{old}.{p}"] = state[f"{new}.{p}"]
    out["final_layer.scale_shift_table"] = state["scale_shift_table"]
    for i in range(TINY["num_layers"]):
        n, o = f"transformer_blocks.{i}", f"blocks.{i}"
        out[f"{o}.scale_shift_table"] = state[f"{n}.scale_shift_table"]
        out[f"{o}.attn.qkv.weight"] = torch.cat([state[f"{n}.attn1.to_{c}.weight"] for c in "qkv"], 0)
        out[f"{o}.attn.q_norm.weight"] = state[f"{n}.attn1.norm_q.weight"]
        out[f"{o}.attn.k_norm.weight"] = state[f"{n}.attn1.norm_k.weight"]
        for p in ("weight", "bias"):
            out[f"{o}.attn.proj.{p}"] = state[f"{n}.attn1.to_out.0.{p}"]
            out[f"{o}.cross_attn.q_linear.{p}"] = state[f"{n}.attn2.to_q.{p}"]
            out[f"{o}.cross_attn.kv_linear.{p}"] = torch.cat([state[f"{n}.attn2.to_k.{p}"],
                                                              state[f"{n}.attn2.to_v.{p}"]], 0)
            out[f"{o}.cross_attn.proj.{p}"] = state[f"{n}.attn2.to_out.0.{p}"]
            out[f"{o}.mlp.inverted_conv.conv.{p}"] = state[f"{n}.ff.conv_inverted.{p}"]
            out[f"{o}.mlp.depth_conv.conv.{p}"] = state[f"{n}.ff.conv_depth.{p}"]
        out[f"{o}.cross_attn.q_norm.weight"] = state[f"{n}.attn2.norm_q.weight"]
        out[f"{o}.cross_attn.k_norm.weight"] = state[f"{n}.attn2.norm_k.weight"]
        out[f"{o}.mlp.point_conv.conv.weight"] = state[f"{n}.ff.conv_point.weight"]
        out[f"{o}.mlp.t_conv.weight"] = state[f"{n}.ff.conv_temp.weight"]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_original_checkpoint_gives_the_same_model_as_the_diffusers_folder(tmp_path, dtype):
    ref_model, folder = make_reference(tmp_path)
    ref_model = ref_model.to(dtype)
    ref_model.save_pretrained(folder)
    original = _to_original_layout(ref_model.state_dict())
    assert len(original) == len(ref_model.state_dict()) - 2 * TINY["num_layers"] * 2 + 4
    torch.save({"state_dict": original, "step": 1000}, tmp_path / "sana_video.pth")

    config = SanaVideoTransformerConfig.from_json_file(folder / "config.json")
    from_original = load_component(tmp_path / "sana_video.pth", config=config)
    from_diffusers = load_component(folder)
    x, t, ctx = inputs(2, 1, 2, 4, 4, 16)
    args = (jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))
    np.testing.assert_array_equal(np.asarray(from_original(*args), np.float32),
                                  np.asarray(from_diffusers(*args), np.float32))


def test_pth_that_needs_code_is_refused(tmp_path):
    import argparse

    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "evil.pth")
    with pytest.raises(WeightFileError, match="refused"):
        load_component(tmp_path / "evil.pth", config=SanaVideoTransformerConfig(**TINY))


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    _, folder = make_reference(tmp_path)
    state = read_state_dict(folder, "diffusion_pytorch_model")
    from sana_jax._io import write_safetensors

    def write(tensors):
        write_safetensors(folder / "diffusion_pytorch_model.safetensors", tensors)

    write({k: v for k, v in state.items() if k != "transformer_blocks.1.ff.conv_temp.weight"})
    expected = r"missing.*transformer_blocks\.1\.ff\.conv_temp\.weight \(expected shape \(24, 24, 3, 1\)\)"
    with pytest.raises(WeightMappingError, match=expected):
        load_component(folder)
    write({**state, "transformer_blocks.0.attn1.to_q.bias": np.zeros(24, np.float32)})
    with pytest.raises(WeightMappingError, match=r"unexpected.*transformer_blocks\.0\.attn1\.to_q\.bias"):
        load_component(folder)
    write({**state, "proj_out.weight": np.zeros((64, 25), np.float32)})
    with pytest.raises(WeightMappingError, match=r"proj_out\.weight has shape \(64, 25\).*\(64, 24\)"):
        load_component(folder)


def test_truncated_weight_file_is_named(tmp_path):
    _, folder = make_reference(tmp_path)
    path = folder / "diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightFileError, match="truncated"):
        load_component(folder)


def test_unknown_config_key_is_named(tmp_path):
    _, folder = make_reference(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_layer"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="num_layer"):
        load_component(folder)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    _, folder = make_reference(tmp_path)
    model = load_component(folder)
    save_component(model, tmp_path / "out")
    before = (tmp_path / "out" / "diffusion_pytorch_model.safetensors").read_bytes()

    import sana_jax.components as components

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(components, "write_state_dict", boom)
    with pytest.raises(OSError, match="disk full"):
        save_component(model, tmp_path / "out")
    assert (tmp_path / "out" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out", "transformer"]


def test_jax_format_file_holds_flax_keys(tmp_path):
    _, folder = make_reference(tmp_path)
    save_component(load_component(folder, scan_layers=True), tmp_path / "jax", format="jax")
    keys = set(read_safetensors(tmp_path / "jax" / "flax_params.safetensors"))
    assert "transformer_blocks_1/ff/conv_temp_kernel" in keys and "patch_embedding_kernel" in keys
