"""The FFN's SiLU -> depthwise -> GLU op (sana_jax.nn.convs.glu_depthwise, a hand-written VJP) against PyTorch's
autograd of the same composition (grouped Conv2d, float64); the VAEs' 3-D conv (both of its forms) against torch's
conv3d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sana_jax.nn import convs
from sana_jax.nn.convs import conv3d, depthwise_conv2d, glu_depthwise
from sana_jax.testing.numerics import rel_err


def _inputs(seed, shape, kh, kw):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    return (rng.standard_normal(shape).astype(np.float32), rng.standard_normal((kh, kw, c)).astype(np.float32) / 3,
            rng.standard_normal(c).astype(np.float32), rng.standard_normal(shape[:-1] + (c // 2,)).astype(np.float32))


def _torch_reference(u, kernel, bias, g):
    """Output and the VJP of g w.r.t. (u, kernel, bias), by torch autograd in float64, channels-first inside."""
    kh, kw, c = kernel.shape
    tu, tk, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (u, kernel, bias))
    lead = u.shape[:-3]
    x = torch.nn.functional.silu(tu).reshape((-1,) + u.shape[-3:]).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(x, tk.permute(2, 0, 1)[:, None], tb, padding=(kh // 2, kw // 2), groups=c)
    value, gate = y.permute(0, 2, 3, 1).reshape(lead + y.shape[2:] + (c,)).chunk(2, dim=-1)
    out = value * torch.nn.functional.silu(gate)
    out.backward(torch.tensor(g, dtype=torch.float64))
    return [t.detach().numpy() for t in (out, tu.grad, tk.grad, tb.grad)]


@pytest.mark.parametrize("shape,kh,kw", [((2, 3, 5, 7, 8), 3, 3), ((4, 6, 12), 3, 3), ((1, 2, 6, 5, 6), 5, 3)])
def test_value_and_gradients_equal_torch_autograd(shape, kh, kw):
    u, kernel, bias, g = _inputs(sum(shape), shape, kh, kw)
    out, vjp = jax.vjp(glu_depthwise, u, kernel, bias)
    got = [out, *vjp(g)]
    for name, a, b in zip(("out", "du", "dkernel", "dbias"), got, _torch_reference(u, kernel, bias, g)):
        assert a.shape == b.shape, name
        assert rel_err(a, b) < 1e-5, (name, rel_err(a, b))


def test_scanned_layers_give_the_eager_gradients():
    """Kernels sliced from a stack inside a scan (how the DiT's layers run) change nothing."""
    shape, layers = (2, 2, 4, 5, 8), 3
    u, _, _, _ = _inputs(0, shape, 3, 3)
    rng = np.random.default_rng(1)
    kernels = jnp.asarray(rng.standard_normal((layers, 3, 3, 8)).astype(np.float32) / 3)
    biases = jnp.asarray(rng.standard_normal((layers, 8)).astype(np.float32))
    proj = jnp.asarray(rng.standard_normal((4, 8)).astype(np.float32) / 2)  # back to 2C channels between layers

    def loss(fn, u, kernels, biases):
        def layer(x, kb):
            return fn(x, *kb) @ proj, None
        return jnp.sum(jnp.sin(jax.lax.scan(layer, u, (kernels, biases))[0]))

    def composed(x, k, b):
        value, gate = jnp.split(depthwise_conv2d(jax.nn.silu(x), k, b), 2, axis=-1)
        return value * jax.nn.silu(gate)

    got = jax.jit(jax.grad(lambda *a: loss(glu_depthwise, *a), argnums=(0, 1, 2)))(u, kernels, biases)
    want = jax.grad(lambda *a: loss(composed, *a), argnums=(0, 1, 2))(u, kernels, biases)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-5


def test_bf16_keeps_bf16_and_stays_close():
    shape = (2, 3, 6, 6, 16)
    u, kernel, bias, g = _inputs(3, shape, 3, 3)
    args = [jnp.asarray(a, jnp.bfloat16) for a in (u, kernel, bias)]
    out, vjp = jax.vjp(glu_depthwise, *args)
    grads = vjp(jnp.asarray(g, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and all(d.dtype == jnp.bfloat16 for d in grads)
    want = _torch_reference(u, kernel, bias, g)
    for a, b in zip([out, *grads], want):
        assert rel_err(np.asarray(a, np.float32), b) < 3e-2


@pytest.mark.parametrize("mode", [None, "int8", "w8a8", "fp8"])
def test_reading_the_kernel_from_memory_changes_no_value(tmp_path, monkeypatch, mode):
    """The identity product that keeps the depthwise kernel out of XLA:CPU's stencil loop (``_in_memory``) must not
    be quantized by qwix (it sits inside the quantized ``ff`` module) nor change a bit of the DiT's output."""
    from sana_jax import load_component
    from sana_jax.nn import convs
    from sana_jax.testing.references import make_transformer_reference, transformer_inputs

    _, folder = make_transformer_reference(tmp_path)
    x, t, ctx = transformer_inputs(1, 2, 3, 4, 4, 16)
    outputs = []
    for bypass in (False, True):
        if bypass:
            monkeypatch.setattr(convs, "_in_memory", lambda kernel, bias: (kernel, bias))
        model = load_component(folder, quantize=mode, scan_layers=True)
        outputs.append(np.asarray(model(x, t, ctx)))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("form", ["_conv3d_xla", "_conv3d_per_tap", "_conv3d_im2col"])
@pytest.mark.parametrize("shape,kernel_size,strides,padding", [
    ((2, 5, 7, 6, 4), (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1))),
    ((1, 6, 8, 9, 3), (3, 3, 1), (2, 1, 1), ((1, 1), (0, 0))),
    ((1, 5, 8, 6, 5), (2, 3, 3), (1, 2, 2), ((0, 0), (1, 2))),
    ((2, 3, 4, 4, 6), (1, 1, 1), (1, 1, 1), ((0, 0), (0, 0))),
])
def test_conv3d_forms_equal_torch(form, shape, kernel_size, strides, padding):
    """Each form conv3d picks from (XLA's 3-D conv; per-frame 2-D convs summed over the time taps; one matmul over
    the shifted views) equals torch's conv3d in float64, with time and space strides, uneven zero padding and 1x1
    kernels."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((*kernel_size, shape[-1], 7)) / 5
    with jax.enable_x64():
        got = np.asarray(jax.jit(getattr(convs, form), static_argnums=(2, 3))(jnp.asarray(x), jnp.asarray(kernel),
                                                                               strides, padding))
    (top, bottom), (left, right) = padding
    tx = torch.nn.functional.pad(torch.tensor(x).permute(0, 4, 1, 2, 3), (left, right, top, bottom))
    want = torch.nn.functional.conv3d(tx, torch.tensor(kernel).permute(4, 3, 0, 1, 2), stride=strides)
    want = want.permute(0, 2, 3, 4, 1).numpy()
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("channels,size,padding,form", [
    (64, 4, 1, "_conv3d_per_tap"),    # 64 channels on 4x4 output pixels: 4 per pixel
    (65, 4, 1, "_conv3d_im2col"),
    (65, 6, 0, "_conv3d_im2col"),     # unpadded: 4x4 output pixels again
    (65, 5, 1, "_conv3d_per_tap"),    # 5x5
])
def test_conv3d_picks_its_form_by_channels_per_pixel(monkeypatch, channels, size, padding, form):
    """On CPU: im2col above _IM2COL_CHANNELS_PER_PIXEL input channels per output pixel of a frame, per-tap 2-D convs
    otherwise (the forms' values are tested above; this checks which one runs)."""
    called = []
    monkeypatch.setattr(convs, form, lambda *a: called.append(form) or a[0])
    pad = ((padding, padding), (padding, padding))
    conv3d(jnp.zeros((1, 3, size, size, channels)), jnp.zeros((3, 3, 3, channels, 2)), (1, 1, 1), pad)
    assert called == [form]


def test_conv3d_checks_channels():
    with pytest.raises(ValueError, match="x has 4 channels, the kernel expects 5"):
        conv3d(jnp.zeros((1, 3, 4, 4, 4)), jnp.zeros((3, 3, 3, 5, 2)))


@pytest.mark.parametrize("shape,kernel_size,strides,padding,zero_frames", [
    ((2, 4, 5, 6, 3), (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1)), 2),   # a Wan2.1 causal conv at a clip's start
    ((1, 1, 4, 4, 3), (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1)), 2),   # one frame: only the last tap reads it
    ((1, 2, 4, 4, 3), (3, 1, 1), (1, 1, 1), ((0, 0), (0, 0)), 4),   # more zero frames than taps: zero outputs first
    ((1, 6, 8, 8, 3), (3, 3, 3), (2, 1, 1), ((1, 1), (1, 1)), 2),   # time stride: the zeros are concatenated
    ((1, 3, 3, 3, 40), (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1)), 2),  # im2col: the zeros are concatenated
])
def test_conv3d_zero_frames_equal_torch_on_zero_padded_frames(shape, kernel_size, strides, padding, zero_frames):
    """``zero_frames`` leading zero frames (causal zero padding) equal torch's conv3d of the zero-padded clip, in
    float64, on every path conv3d takes."""
    rng = np.random.default_rng(sum(shape) + zero_frames)
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((*kernel_size, shape[-1], 5)) / 5
    with jax.enable_x64():
        got = np.asarray(jax.jit(lambda x, k: conv3d(x, k, strides, padding, zero_frames))(jnp.asarray(x),
                                                                                          jnp.asarray(kernel)))
    (top, bottom), (left, right) = padding
    tx = torch.tensor(np.concatenate([np.zeros((shape[0], zero_frames) + shape[2:]), x], axis=1)).permute(0, 4, 1, 2, 3)
    tx = torch.nn.functional.pad(tx, (left, right, top, bottom))
    want = torch.nn.functional.conv3d(tx, torch.tensor(kernel).permute(4, 3, 0, 1, 2), stride=strides)
    want = want.permute(0, 2, 3, 4, 1).numpy()
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-12


def test_conv3d_convolves_only_the_real_frames_behind_zero_frames():
    """On CPU, the per-tap form's 2-D convs take only the frames each time tap reads from x: with 2 zero frames in
    front of 4 frames, taps 0, 1, 2 convolve 2, 3 and 4 frames (9, not 12, frame convolutions)."""
    x, kernel = jnp.zeros((1, 4, 6, 6, 3)), jnp.zeros((3, 3, 3, 3, 4))
    jaxpr = jax.make_jaxpr(lambda x, k: conv3d(x, k, (1, 1, 1), ((1, 1), (1, 1)), 2))(x, kernel)
    frames = [e.invars[0].aval.shape[0] for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert frames == [2, 3, 4]
