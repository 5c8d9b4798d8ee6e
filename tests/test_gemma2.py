"""The Flax Gemma2 text encoder against transformers' Gemma2Model: random weights, save_pretrained, our loader."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Gemma2Config as HFGemma2Config
from transformers import Gemma2ForCausalLM, Gemma2Model

from sana_jax.testing.numerics import randomize_, rel_err
from sana_jax import load_component, save_component
from sana_jax.config import GEMMA2_2B, ConfigError, Gemma2Config
from sana_jax.weights.io import read_state_dict, write_state_dict
from sana_jax.weights.rulebook import WeightMappingError

TINY = dict(head_dim=16, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
            num_key_value_heads=1, vocab_size=256, sliding_window=4, max_position_embeddings=8192)
TOL = 1e-5


def make_reference(folder, seed=0, cls=Gemma2Model, **overrides):
    model = cls(HFGemma2Config(**{**TINY, **overrides}, attn_implementation="eager"))
    model = randomize_(model, seed=seed).eval()
    model.save_pretrained(folder)
    return model


def tokens(seed, b, length):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], (b, length))


def run_reference(model, ids, mask=None):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids),
                    attention_mask=None if mask is None else torch.from_numpy(mask))
    return out.last_hidden_state.float().numpy()


def run_ours(folder, ids, mask=None, **options):
    model = load_component(folder, **options)
    return np.asarray(model(jnp.asarray(ids), None if mask is None else jnp.asarray(mask)))


@pytest.mark.parametrize("scan", [False, True])
def test_tiny_config_matches_transformers(tmp_path, scan):
    ref_model = make_reference(tmp_path / "te")
    ids = tokens(0, 1, 7)
    err = rel_err(run_ours(tmp_path / "te", ids, scan_layers=scan), run_reference(ref_model, ids))
    print(f"tiny, scan={scan}: rel err {err:.2e}")
    assert err <= TOL


def test_attention_biases_and_explicit_layer_types_match_transformers(tmp_path):
    types = ["full_attention", "sliding_attention", "sliding_attention"]
    ref_model = make_reference(tmp_path / "te", seed=7, num_hidden_layers=3, attention_bias=True, layer_types=types,
                               num_attention_heads=4, num_key_value_heads=2)
    ids = tokens(7, 2, 13)
    err = rel_err(run_ours(tmp_path / "te", ids), run_reference(ref_model, ids))
    print(f"attention_bias, layer_types {types}, 4 heads / 2 kv heads: rel err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("scan", [False, True])
def test_sequence_longer_than_sliding_window_matches_transformers(tmp_path, scan):
    ref_model = make_reference(tmp_path / "te", seed=1, num_hidden_layers=3)
    ids = tokens(1, 1, 20)
    ref = run_reference(ref_model, ids)
    err = rel_err(run_ours(tmp_path / "te", ids, scan_layers=scan), ref)
    print(f"20 tokens, window 4, 3 layers, scan={scan}: rel err {err:.2e}")
    assert err <= TOL
    # The window matters: the same weights with full attention on every layer give another answer.
    ref_model.config.sliding_window = 64
    assert rel_err(run_reference(ref_model, ids), ref) > 1e-3


@pytest.mark.parametrize("scan", [False, True])
def test_right_padded_batch_matches_transformers_at_every_position(tmp_path, scan):
    ref_model = make_reference(tmp_path / "te", seed=2, num_hidden_layers=3)
    ids = tokens(2, 2, 20)
    mask = np.ones((2, 20), np.int64)
    mask[1, 9:] = 0
    ref = run_reference(ref_model, ids, mask)
    ours = run_ours(tmp_path / "te", ids, mask, scan_layers=scan)
    errs = rel_err(ours[0], ref[0]), rel_err(ours[1, :9], ref[1, :9]), rel_err(ours[1, 9:], ref[1, 9:])
    print(f"padded batch, scan={scan}: rel err full row {errs[0]:.2e}, tokens {errs[1]:.2e}, padding {errs[2]:.2e}")
    assert errs[0] <= TOL and errs[1] <= TOL
    # Padded positions hold what transformers computes there too (positions 12.. see no key on sliding layers,
    # where both average over all keys).
    assert errs[2] <= TOL
    # Causal attention keeps right padding away from the tokens: the row equals the unpadded 9-token sequence...
    assert rel_err(ours[1, :9], run_reference(ref_model, ids[1:, :9])[0]) <= TOL
    # ...so the mask shows only at the padded positions, where ignoring it gives another answer.
    assert rel_err(run_reference(ref_model, ids)[1, 9:], ref[1, 9:]) > 1e-3


def test_causal_lm_folder_loads_its_decoder(tmp_path):
    ref_model = make_reference(tmp_path / "lm", seed=3, cls=Gemma2ForCausalLM, num_hidden_layers=3)
    assert all(k.startswith("model.") for k in read_state_dict(tmp_path / "lm", "model"))
    ids = tokens(3, 2, 11)
    ref = run_reference(ref_model.model, ids)
    err = rel_err(run_ours(tmp_path / "lm", ids), ref)
    print(f"Gemma2ForCausalLM folder (model. prefix): rel err {err:.2e}")
    assert err <= TOL

    # A stored copy of the tied head is dropped; an untied head is refused, by name.
    state = read_state_dict(tmp_path / "lm", "model")
    write_state_dict(tmp_path / "lm", "model", {**state, "lm_head.weight": state["model.embed_tokens.weight"]})
    assert rel_err(run_ours(tmp_path / "lm", ids), ref) <= TOL
    write_state_dict(tmp_path / "lm", "model", {**state, "lm_head.weight": state["model.embed_tokens.weight"] + 1})
    with pytest.raises(WeightMappingError, match="lm_head.weight"):
        load_component(tmp_path / "lm")


def test_top_level_rope_theta_and_rope_parameters_agree(tmp_path):
    ref_model = make_reference(tmp_path / "te", seed=4, rope_parameters={"rope_theta": 500.0, "rope_type": "default"})
    ids = tokens(4, 1, 12)
    ref = run_reference(ref_model, ids)
    assert rel_err(run_ours(tmp_path / "te", ids), ref) <= TOL
    assert rel_err(run_reference(make_reference(tmp_path / "other", seed=4), ids), ref) > 1e-3  # theta matters

    config = json.loads((tmp_path / "te" / "config.json").read_text())
    legacy = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype")}
    legacy.update(rope_theta=500.0, torch_dtype="float32", hidden_act="gelu_pytorch_tanh",
                  cache_implementation="hybrid", sliding_window_size=4, transformers_version="4.42.4")
    (tmp_path / "te" / "config.json").write_text(json.dumps(legacy))
    assert Gemma2Config.from_dict(legacy) == Gemma2Config.from_dict(config)
    err = rel_err(run_ours(tmp_path / "te", ids), ref)
    print(f"rope_theta 500 top-level: rel err {err:.2e}")
    assert err <= TOL
    # transformers reads the 4.x form the same way.
    assert rel_err(run_reference(Gemma2Model.from_pretrained(tmp_path / "te").eval(), ids), ref) <= 1e-6

    with pytest.raises(ConfigError, match="rope_parameters"):
        Gemma2Config.from_dict({**config, "rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 2}})
    with pytest.raises(ConfigError, match="sliding_window_size"):
        Gemma2Config.from_dict({**legacy, "sliding_window_size": 8})
    with pytest.raises(ConfigError, match="differently"):
        Gemma2Config.from_dict({**config, "rope_theta": 10000.0})


@pytest.mark.parametrize("scan", [False, True])
def test_transformers_to_jax_to_transformers_is_bit_exact_and_loads_in_transformers(tmp_path, scan):
    ref_model = make_reference(tmp_path / "te", seed=5, num_hidden_layers=3)
    model = load_component(tmp_path / "te", scan_layers=scan)
    save_component(model, tmp_path / "jax", format="jax")
    again = load_component(tmp_path / "jax", scan_layers=not scan)
    save_component(again, tmp_path / "back")

    original, back = read_state_dict(tmp_path / "te", "model"), read_state_dict(tmp_path / "back", "model")
    assert sorted(original) == sorted(back)
    for key in original:
        assert original[key].dtype == back[key].dtype and np.array_equal(original[key], back[key]), key
    a = json.loads((tmp_path / "te" / "config.json").read_text())
    b = json.loads((tmp_path / "back" / "config.json").read_text())
    assert a == b

    reloaded = Gemma2Model.from_pretrained(tmp_path / "back").eval()
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in reloaded.state_dict().items())
    ids = tokens(5, 1, 9)
    assert rel_err(run_reference(reloaded, ids), run_reference(ref_model, ids)) <= 1e-6


def test_sharded_folders_read_and_write(tmp_path):
    ref_model = make_reference(tmp_path / "te", seed=8)
    ref_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids = tokens(8, 1, 6)
    ref = run_reference(ref_model, ids)
    model = load_component(tmp_path / "sharded")
    assert rel_err(np.asarray(model(jnp.asarray(ids))), ref) <= TOL
    save_component(model, tmp_path / "ours", max_shard_bytes=20_000)
    assert (tmp_path / "ours" / "model.safetensors.index.json").is_file()
    assert rel_err(run_reference(Gemma2Model.from_pretrained(tmp_path / "ours").eval(), ids), ref) <= 1e-6


def test_bf16_weights_keep_their_dtype_and_compute_in_bf16(tmp_path):
    ref_model = make_reference(tmp_path / "te", seed=6)
    ids = tokens(6, 1, 10)
    exact = run_reference(ref_model, ids)
    ref_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    ours = load_component(tmp_path / "bf16", dtype="bfloat16")
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(ours.params))
    out = ours(jnp.asarray(ids), None)
    assert out.dtype == jnp.bfloat16
    # bf16 rounding differs between the two frameworks; ours is as close to the fp32 answer as transformers' bf16.
    err, ref_err = rel_err(np.asarray(out, np.float32), exact), rel_err(run_reference(ref_model, ids), exact)
    print(f"bf16 vs fp32 answer: ours {err:.2e}, transformers bf16 {ref_err:.2e}")
    assert err <= 1.5 * ref_err and ref_err < 3e-2
    save_component(ours, tmp_path / "out")
    a, b = read_state_dict(tmp_path / "bf16", "model"), read_state_dict(tmp_path / "out", "model")
    assert all(np.array_equal(a[k].view(np.uint16), b[k].view(np.uint16)) for k in a)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"


def test_config_keys_are_strict_and_transformers_metadata_round_trips(tmp_path):
    make_reference(tmp_path / "te")
    config = json.loads((tmp_path / "te" / "config.json").read_text())
    assert Gemma2Config.from_dict(config).to_dict() == config
    with pytest.raises(ConfigError, match="not_a_gemma_key"):
        Gemma2Config.from_dict({**config, "not_a_gemma_key": 1})
    with pytest.raises(ConfigError, match="model_type"):
        Gemma2Config.from_dict({**config, "model_type": "gemma3_text"})
    with pytest.raises(ConfigError, match="hidden_activation"):
        Gemma2Config.from_dict({**config, "hidden_activation": "relu"})
    with pytest.raises(ConfigError, match="layer_types"):
        Gemma2Config.from_dict({**config, "layer_types": ["full_attention"]})


def test_bad_inputs_name_the_argument(tmp_path):
    make_reference(tmp_path / "te")
    model = load_component(tmp_path / "te")
    with pytest.raises(ValueError, match="input_ids"):
        model(jnp.zeros((1, 4), jnp.float32), None)
    with pytest.raises(ValueError, match="attention_mask"):
        model(jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 5)))


def test_gemma2_2b_builds_with_the_published_param_count():
    from sana_jax.components import REGISTRY, abstract_params

    spec = REGISTRY[GEMMA2_2B.class_name]
    sizes = {}
    for scan in (False, True):
        params = abstract_params(spec, GEMMA2_2B, spec.build(GEMMA2_2B, scan_layers=scan))
        sizes[scan] = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    print(f"GEMMA2_2B: {sizes[False]:,} params")
    assert sizes[False] == sizes[True] == 2_614_341_888
    import transformers

    with torch.device("meta"):  # transformers' own count of the same config.json (nothing allocated)
        reference = transformers.Gemma2Model(transformers.Gemma2Config(**GEMMA2_2B.to_dict()))
    assert sum(p.numel() for p in reference.parameters()) == sizes[False]
    assert GEMMA2_2B.layer_type_list[:2] == ("sliding_attention", "full_attention")


@pytest.mark.parametrize("scan", [False, True])
def test_every_param_carries_logical_axis_names(scan):
    import flax.linen as nn

    from sana_jax.components import REGISTRY

    cfg = Gemma2Config(**TINY)
    spec = REGISTRY[cfg.class_name]
    boxed = jax.eval_shape(lambda: spec.build(cfg, scan_layers=scan).init(jax.random.key(0),
                                                                           *spec.example_inputs(cfg)))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) and len(x.names) == x.value.ndim for x in leaves)
    if scan:
        assert {leaf.names[0] for leaf in jax.tree_util.tree_leaves(
            boxed["layers"], is_leaf=lambda x: isinstance(x, nn.Partitioned))} == {"layers"}
