"""Quantized inference (`sana_jax.quantize`, qwix PTQ): error against the unquantized model at the published width,
the quantized weights' size, scanned == unrolled, and bad input."""


import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax import load_component
from sana_jax import quantize as quantization
from sana_jax.components import REGISTRY, abstract_params
from sana_jax.config.transformer import SANA_VIDEO_2B_480P
from sana_jax.testing.numerics import rel_err
from sana_jax.testing.references import make_transformer_reference, transformer_inputs

# the largest relative error of each mode (the bound for one block at the published width)
BOUNDS = {"int8": 0.01, "w8a8": 0.03, "fp8": 0.03}


@pytest.fixture(scope="module")
def published_width_block(tmp_path_factory):
    """One block of the published 2B DiT (D 2240 = 20 x 112 heads, caption 2304, mlp ratio 3) with diffusers' own
    random initialisation, saved by save_pretrained; its caption projection and embeddings come with it."""
    import torch

    torch.manual_seed(0)
    keep = ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "num_cross_attention_heads",
            "cross_attention_head_dim", "cross_attention_dim", "caption_channels", "mlp_ratio", "sample_size",
            "patch_size", "rope_max_seq_len")
    cfg = {k: getattr(SANA_VIDEO_2B_480P, k) for k in keep}
    from diffusers import SanaVideoTransformer3DModel

    model = SanaVideoTransformer3DModel(num_layers=1, **cfg).eval()
    with torch.no_grad():     # the temporal conv starts at zero in diffusers: torch's default conv scale instead
        kernel = model.transformer_blocks[0].ff.conv_temp.weight          # (out, in, 3, 1)
        bound = (kernel.shape[1] * kernel.shape[2]) ** -0.5
        kernel.uniform_(-bound, bound)
    folder = tmp_path_factory.mktemp("block") / "transformer"
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("mode", quantization.MODES)
def test_one_published_width_block_stays_within_the_bound_of_each_mode(published_width_block, mode):
    x, t, ctx = transformer_inputs(0, 1, 2, 8, 8, 16, text_len=12, caption=2304)
    full = load_component(published_width_block)
    quantized = load_component(published_width_block, quantize=mode)
    want = np.asarray(full(x, t, ctx))
    got = np.asarray(quantized(x, t, ctx))
    err = rel_err(got, want)
    print(f"\n{mode}: one block at D 2240, relative error {err:.4%} (bound {BOUNDS[mode]:.0%})")
    assert np.isfinite(got).all() and 0 < err <= BOUNDS[mode]


def _bytes(tree, float_dtype):
    """Bytes of an abstract param tree with float leaves stored in ``float_dtype`` (QArray values and scales as
    they are)."""
    from qwix._src.providers.ptq import WithAux

    total = 0
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, WithAux)):
        if isinstance(leaf, WithAux):
            total += sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize
                         for a in jax.tree_util.tree_leaves(leaf.array))
        else:
            total += int(np.prod(leaf.shape)) * jnp.dtype(float_dtype).itemsize
    return total


@pytest.mark.parametrize("mode", quantization.MODES)
def test_the_published_dits_quantized_weights_are_at_most_055_of_bf16(mode):
    config = SANA_VIDEO_2B_480P
    spec = REGISTRY[config.class_name]
    module = spec.build(config, scan_layers=True)
    bf16 = _bytes(abstract_params(spec, config, module), jnp.bfloat16)
    quantized = _bytes(abstract_params(spec, config, quantization.quantize_module(module, mode, config.class_name)),
                       jnp.bfloat16)
    print(f"\n{mode}: the 2B DiT's weights {quantized / 2**30:.2f} GiB vs {bf16 / 2**30:.2f} GiB in bf16 "
          f"({quantized / bf16:.3f}x)")
    assert quantized <= 0.55 * bf16


@pytest.mark.parametrize("mode", quantization.MODES)
def test_scanned_and_unrolled_quantized_transformers_agree(tmp_path, mode):
    _, folder = make_transformer_reference(tmp_path)
    x, t, ctx = transformer_inputs(1, 2, 3, 4, 4, 16)
    unrolled = load_component(folder, quantize=mode)
    scanned = load_component(folder, quantize=mode, scan_layers=True)
    np.testing.assert_allclose(np.asarray(scanned(x, t, ctx)), np.asarray(unrolled(x, t, ctx)), rtol=1e-5, atol=1e-5)
    kernels = flax.traverse_util.flatten_dict(flax.core.unfreeze(scanned.params))
    assert any(k[-2:] == ("to_q", "kernel") for k in kernels)
    assert scanned.quantize == mode and mode in repr(scanned)



@pytest.mark.parametrize("mode", quantization.MODES)
def test_bf16_compute_keeps_bf16_activations_through_the_scanned_layers(tmp_path, mode):
    """Quantized products come out in their scales' dtype: the scales follow the compute dtype, so a bf16 model's
    scan carry stays bf16 (it fails to trace otherwise)."""
    _, folder = make_transformer_reference(tmp_path)
    x, t, ctx = transformer_inputs(1, 2, 3, 4, 4, 16)
    want = np.asarray(load_component(folder)(x, t, ctx))
    got = load_component(folder, quantize=mode, dtype="bfloat16", scan_layers=True)(x, t, ctx)
    err = rel_err(np.asarray(got, np.float32), want)
    print(f"\n{mode} in bf16: relative error {err:.3%} against fp32 unquantized")
    assert err <= 0.05

def test_quantized_gemma2_stays_close(tmp_path):
    from transformers import Gemma2Config, Gemma2Model

    import torch

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=32)
    Gemma2Model(cfg).eval().save_pretrained(tmp_path / "gemma")
    ids = np.random.default_rng(0).integers(0, 64, size=(2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    want = np.asarray(load_component(tmp_path / "gemma")(ids, mask))
    got = np.asarray(load_component(tmp_path / "gemma", quantize="int8")(ids, mask))
    err = rel_err(got, want)
    print(f"\nGemma2 int8: relative error {err:.4%}")
    # transformers' N(0, 0.02) init: per-channel int8 of Gaussian weights costs ~0.7% per matmul, 14 in a row here
    assert 0 < err <= 0.03

    # fp8: Gemma2's weights in e4m3, its activations in the compute dtype (quantize.WEIGHT_ONLY) -- the float model
    # with each targeted kernel rounded to e4m3 per output channel (absmax / 448) computes the same
    float_model = load_component(tmp_path / "gemma")
    flat = flax.traverse_util.flatten_dict(float_model.params, sep="/")
    rounded = 0
    for key, kernel in flat.items():
        if re.search(quantization.TARGETS["Gemma2Model"], key) and key.endswith("kernel"):
            w = np.asarray(kernel, np.float32)
            scale = np.abs(w).max(axis=0, keepdims=True) / 448.0
            flat[key] = jnp.asarray((w / scale).astype(jnp.float8_e4m3fn).astype(np.float32) * scale)
            rounded += 1
    assert rounded == 14
    float_model.params = flax.traverse_util.unflatten_dict(flat, sep="/")
    want = np.asarray(float_model(ids, mask))
    got = np.asarray(load_component(tmp_path / "gemma", quantize="fp8")(ids, mask))
    print(f"Gemma2 fp8 (weights only): relative error {rel_err(got, want):.2e} against e4m3-rounded kernels")
    assert rel_err(got, want) <= 1e-4   # with e4m3 activations too: 5.8e-2 off


def test_an_unknown_quantize_value_names_it_and_the_choices(tmp_path):
    _, folder = make_transformer_reference(tmp_path)
    with pytest.raises(ValueError, match=r"quantize='int4'.*'int8', 'w8a8', 'fp8'"):
        load_component(folder, quantize="int4")


def test_a_component_without_quantized_layers_is_an_error_naming_it(tmp_path):
    from sana_jax.testing.references import WAN_VAE_TINY, make_wan_vae_reference

    make_wan_vae_reference(tmp_path / "vae", **WAN_VAE_TINY)
    with pytest.raises(ValueError, match="AutoencoderKLWan has no quantized layers"):
        load_component(tmp_path / "vae", quantize="int8")


def test_sample_py_quantize_int8_writes_the_prompted_video(tmp_path):
    """`python sample.py --quantize int8 --prompt ...` with the shipped demo model: a held-out combination, read
    back by the detector."""
    import subprocess
    import sys

    import av

    from sana_jax.shapes import world
    from sana_jax.shapes.detect import detect
    from sana_jax.testing.training import REPO

    out = tmp_path / "video.mp4"
    prompt = "a blue square moving up"
    assert world.parse_caption(prompt) in world.HELD_OUT
    proc = subprocess.run([sys.executable, "sample.py", "--quantize", "int8", "--prompt", prompt, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    got = detect(frames)
    assert (got.colour, got.shape, got.direction) == ("blue", "square", "up")


def test_the_pipeline_and_the_cli_refuse_an_unknown_quantize_before_loading(tmp_path):
    import subprocess
    import sys

    from sana_jax import SanaVideoPipeline
    from sana_jax.testing.training import REPO

    with pytest.raises(ValueError, match=r"quantize='int4'"):
        SanaVideoPipeline.from_pretrained(f"{REPO}/sana_jax/shapes/model", quantize="int4")
    proc = subprocess.run([sys.executable, "sample.py", "--quantize", "int4", "--prompt", "x",
                           "--out", str(tmp_path / "v.mp4")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--quantize" in proc.stderr and "int4" in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_quantize_components_picks_which_of_the_text_encoder_and_the_transformer_are_quantized():
    from sana_jax import SanaVideoPipeline
    from sana_jax.testing.training import REPO

    demo = f"{REPO}/sana_jax/shapes/model"
    both = SanaVideoPipeline.from_pretrained(demo, quantize="fp8")
    dit_only = SanaVideoPipeline.from_pretrained(demo, quantize="fp8", quantize_components=["transformer"])
    text_only = SanaVideoPipeline.from_pretrained(demo, quantize="int8", quantize_components="text_encoder")
    assert (both.text_encoder.quantize, both.transformer.quantize) == ("fp8", "fp8")
    assert (dit_only.text_encoder.quantize, dit_only.transformer.quantize) == (None, "fp8")
    assert (text_only.text_encoder.quantize, text_only.transformer.quantize) == ("int8", None)
    plain = SanaVideoPipeline.from_pretrained(demo)
    ids, mask = np.full((1, 4), 3, np.int32), np.ones((1, 4), np.int32)
    np.testing.assert_array_equal(np.asarray(dit_only.text_encoder(ids, mask)),
                                  np.asarray(plain.text_encoder(ids, mask)))
    for bad in (["vae"], [], ["transformer", "unet"]):
        with pytest.raises(ValueError, match=r"quantize_components=.*expected one or more of \('text_encoder', "
                                             r"'transformer'\)"):
            SanaVideoPipeline.from_pretrained(demo, quantize="int8", quantize_components=bad)


def test_sample_py_refuses_an_unknown_quantize_component(tmp_path):
    import subprocess
    import sys

    from sana_jax.testing.training import REPO

    proc = subprocess.run([sys.executable, "sample.py", "--quantize", "fp8", "--quantize-components", "vae",
                           "--prompt", "x", "--out", str(tmp_path / "v.mp4")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--quantize-components" in proc.stderr and "'vae'" in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_a_quantized_transformer_under_a_mesh_equals_the_unsharded_one(tmp_path):
    """int8 values and their scales sharded along the output axis (q/k/v, the FFN's inverted conv) over `tensor`,
    the batch over `data`: the same velocity as on one device."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sana_jax.training import mesh as mesh_lib

    _, folder = make_transformer_reference(tmp_path, num_attention_heads=4, num_cross_attention_heads=4,
                                           cross_attention_dim=48)
    model = load_component(folder, quantize="int8", scan_layers=True)
    x, t, ctx = transformer_inputs(1, 4, 3, 4, 4, 16)
    want = np.asarray(model(x, t, ctx))
    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=1, tensor=4, sequence=1))
    split = ("to_q", "to_k", "to_v", "conv_inverted")

    def sharding(path, leaf):
        name = jax.tree_util.keystr(path)
        if leaf.ndim >= 2 and any(s in name for s in split) and leaf.shape[-1] % 4 == 0:
            return NamedSharding(mesh, P(*([None] * (leaf.ndim - 1)), "tensor"))
        return NamedSharding(mesh, P())

    params = jax.device_put(model.params, jax.tree_util.tree_map_with_path(sharding, model.params))
    sharded = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if "qvalue" in jax.tree_util.keystr(path) and "tensor" in str(leaf.sharding.spec)]
    assert sharded and all(leaf.dtype == jnp.int8 for leaf in sharded)
    got = jax.jit(lambda p, *a: model.module.apply({"params": p}, *a))(
        params, jax.device_put(x, NamedSharding(mesh, P("data"))), t, ctx)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("mode", quantization.MODES)
@pytest.mark.parametrize("scan", [False, True])
def test_a_folder_saved_quantized_loads_back_the_same_model_without_quantizing(tmp_path, monkeypatch, mode, scan):
    from sana_jax import _io, save_component

    _, folder = make_transformer_reference(tmp_path)
    x, t, ctx = transformer_inputs(1, 2, 3, 4, 4, 16)
    model = load_component(folder, quantize=mode, scan_layers=scan)
    want = np.asarray(model(x, t, ctx))
    save_component(model, tmp_path / "saved", format="jax")
    stored = _io.read_safetensors(tmp_path / "saved" / "flax_params.safetensors")
    qdtype = {"int8": np.int8, "w8a8": np.int8, "fp8": jnp.float8_e4m3fn}[mode]
    assert stored["transformer_blocks_0/attn1/to_q/kernel.qvalue"].dtype == qdtype
    assert "transformer_blocks_0/attn1/to_q/kernel" not in stored

    for name in ("quantize_params", "quantize_component"):     # loading takes the stored values as they are
        monkeypatch.setattr(quantization, name, lambda *a, **k: pytest.fail("quantized while loading"))
    for loaded in (load_component(tmp_path / "saved", scan_layers=not scan),
                   load_component(tmp_path / "saved", quantize=mode, scan_layers=scan)):
        assert loaded.quantize == mode
        np.testing.assert_allclose(np.asarray(loaded(x, t, ctx)), want, rtol=1e-6, atol=1e-6)


def test_a_quantized_folder_loaded_with_another_mode_names_both(tmp_path):
    from sana_jax import save_component
    from sana_jax.config import ConfigError

    _, folder = make_transformer_reference(tmp_path)
    save_component(load_component(folder, quantize="int8"), tmp_path / "saved", format="jax")
    with pytest.raises(ConfigError, match=r"saved with quantize='int8'; loading it with quantize='fp8'"):
        load_component(tmp_path / "saved", quantize="fp8")


def test_a_quantized_model_saved_in_the_diffusers_format_is_an_error_and_writes_nothing(tmp_path):
    from sana_jax import save_component

    _, folder = make_transformer_reference(tmp_path)
    model = load_component(folder, quantize="int8")
    with pytest.raises(ValueError, match=r"format='diffusers'.*quantized \('int8'\).*format='jax'"):
        save_component(model, tmp_path / "out", format="diffusers")
    assert not (tmp_path / "out").exists()



def test_convert_to_jax_quantize_writes_a_pipeline_that_loads_quantized_and_samples_the_same(tmp_path, capsys):
    """`python -m convert to-jax DEMO DST --quantize int8`: the transformer and text encoder saved quantized; the
    folder loads quantized with no flag and streams the frames the float folder gives with quantize="int8"."""
    from convert.__main__ import main as convert_main
    from sana_jax import SanaVideoPipeline
    from sana_jax.config import ConfigError
    from sana_jax.testing.training import REPO

    demo = f"{REPO}/sana_jax/shapes/model"
    assert convert_main(["to-jax", demo, str(tmp_path / "q"), "--quantize", "int8"]) == 0
    for name in ("transformer", "text_encoder"):
        assert (tmp_path / "q" / name / quantization.QUANTIZATION_FILE).is_file()
    assert not (tmp_path / "q" / "vae" / quantization.QUANTIZATION_FILE).exists()
    saved = SanaVideoPipeline.from_pretrained(tmp_path / "q")
    assert saved.transformer.quantize == "int8" and saved.text_encoder.quantize == "int8"
    kwargs = dict(frames=9, height=32, width=32, num_inference_steps=4, guidance_scale=1.0, block_frames=2,
                  sampler="few_step", seed=3)
    got = np.concatenate(list(saved.stream("a red circle moving left", **kwargs)), axis=1)
    want = np.concatenate(list(SanaVideoPipeline.from_pretrained(demo, quantize="int8").stream(
        "a red circle moving left", **kwargs)), axis=1)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match=r"saved with quantize='int8'; loading it with quantize='fp8'"):
        SanaVideoPipeline.from_pretrained(tmp_path / "q", quantize="fp8")
    assert convert_main(["to-torch", demo, str(tmp_path / "t"), "--quantize", "int8"]) != 0
    assert "quantize='int8': quantized weights are written in the JAX format only" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()



_LOAD_AND_REPORT_RSS = """
import sys
import jax
import jax.numpy as jnp
import qwix  # noqa: F401  (the modules a quantized load uses, imported before the measurement)
from sana_jax import load_component

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

jnp.zeros(4).block_until_ready()                # the backend is up before the measurement
with open("/proc/self/clear_refs", "w") as f:   # the peak resident size starts again from the current one
    f.write("5")
before = status("VmRSS")
model = load_component(sys.argv[1])
jax.block_until_ready(model.params)
print(model.quantize, before, status("VmHWM"), status("VmRSS"))
"""


def test_a_pre_quantized_folder_loads_with_peak_host_memory_below_the_bf16_weights(published_width_block, tmp_path):
    """The loader reads the stored int8 values and scales tensor by tensor into arrays XLA:CPU adopts as its
    buffers, and never makes the bf16 weights: in a fresh process, the peak resident memory the load adds stays
    below the model's bf16 size, and at least its quantized size, which the loaded model holds."""
    import subprocess
    import sys

    from sana_jax import save_component

    bf16_model = load_component(published_width_block, param_dtype=jnp.bfloat16)
    save_component(quantization.quantize_component(bf16_model, "int8"), tmp_path / "q", format="jax")
    config, module = bf16_model.config, bf16_model.module
    spec = REGISTRY[config.class_name]
    bf16 = _bytes(abstract_params(spec, config, module), jnp.bfloat16)
    quantized = _bytes(abstract_params(spec, config, quantization.quantize_module(module, "int8", config.class_name)),
                       jnp.bfloat16)
    del bf16_model
    result = subprocess.run([sys.executable, "-c", _LOAD_AND_REPORT_RSS, str(tmp_path / "q")], capture_output=True,
                            text=True, env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"}, check=True)
    mode, before, peak, after = result.stdout.split()[-4:]
    added, kept = int(peak) - int(before), int(after) - int(before)
    print(f"\nloading the pre-quantized block (D 2240): peak host memory +{added / 2**20:.0f} MiB (kept "
          f"+{kept / 2**20:.0f}); its int8 weights {quantized / 2**20:.0f} MiB, bf16 {bf16 / 2**20:.0f} MiB")
    assert mode == "int8"
    assert 0.9 * quantized <= kept and added < bf16


@pytest.fixture(scope="module")
def published_width_gemma2(tmp_path_factory):
    """Two Gemma2 layers at Gemma2-2B's width (hidden 2304, MLP 9216, 8 heads of 256, 4 KV heads, softcaps) with
    transformers' random init and a 512-token vocabulary (the embedding is never quantized)."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    from sana_jax.config.gemma2 import GEMMA2_2B

    torch.manual_seed(0)
    keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "sliding_window",
            "rms_norm_eps", "rope_theta", "hidden_activation")
    cfg = Gemma2Config(vocab_size=512, num_hidden_layers=2, max_position_embeddings=64,
                       **{k: getattr(GEMMA2_2B, k) for k in keep})
    folder = tmp_path_factory.mktemp("gemma2_2b_width") / "text_encoder"
    Gemma2Model(cfg).eval().save_pretrained(folder)
    return folder


# measured 2026-12-03: 2.0 / 3.4 / 6.2% (fp8 is e4m3 weights alone for Gemma2: ~3.6% rms rounding each)
GEMMA2_BOUNDS = {"int8": 0.03, "w8a8": 0.05, "fp8": 0.08}


@pytest.mark.parametrize("mode", quantization.MODES)
def test_gemma2_at_the_published_width_stays_close_in_each_mode(published_width_gemma2, mode):
    ids = np.random.default_rng(0).integers(0, 512, size=(2, 32)).astype(np.int32)
    mask = np.ones((2, 32), np.int32)
    want = np.asarray(load_component(published_width_gemma2)(ids, mask))
    got = np.asarray(load_component(published_width_gemma2, quantize=mode)(ids, mask))
    err = rel_err(got, want)
    print(f"\nGemma2, 2 layers at the 2B width, {mode}: relative error {err:.2%} (bound {GEMMA2_BOUNDS[mode]:.0%})")
    assert np.isfinite(got).all() and 0 < err <= GEMMA2_BOUNDS[mode]
