"""`sana_jax._compile`: the CPU compiler options the pipeline's programs compile with."""

import jax
import jax.numpy as jnp

from sana_jax import _compile


def _compiled_text(jit, fun, *args):
    return jit(fun).lower(*args).compile().as_text()


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_cpu_programs_keep_convolutions_and_dots_off_ynnpack_and_reductions_on_it():
    """The options take convolutions and dots away from YNNPACK (XLA's own are faster for this project's programs
    here) and leave reductions where XLA puts them by default."""
    _compile.compiler_options.cache_clear()
    assert "xla_cpu_experimental_ynn_fusion_type" in _compile.compiler_options()
    conv_args = (jnp.ones((1, 16, 16, 32)), jnp.ones((3, 3, 32, 32)))
    dot_args = (jnp.ones((64, 128)), jnp.ones((128, 64)))
    for fun, args in ((_conv, conv_args), (lambda a, b: a @ b, dot_args)):
        assert "__ynn_fusion" in _compiled_text(jax.jit, fun, *args)
        assert "__ynn_fusion" not in _compiled_text(_compile.jit, fun, *args)
    reduce_args = (jnp.ones((256, 512)),)
    assert "__ynn_fusion" in _compiled_text(_compile.jit, lambda a: jnp.sum(a * a, axis=-1), *reduce_args)


def test_cpu_vae_programs_keep_reductions_off_ynnpack_too():
    """The VAE programs' norms reduce few channels over large frames, which YNNPACK runs slower than XLA."""
    _compile.compiler_options.cache_clear()
    vae_jit = lambda fun: _compile.jit(fun, vae=True)  # noqa: E731
    for fun, args in ((_conv, (jnp.ones((1, 16, 16, 32)), jnp.ones((3, 3, 32, 32)))),
                      (lambda a, b: a @ b, (jnp.ones((64, 128)), jnp.ones((128, 64)))),
                      (lambda a: jnp.sum(a * a, axis=-1), (jnp.ones((256, 512)),))):
        assert "__ynn_fusion" not in _compiled_text(vae_jit, fun, *args)


def test_an_option_this_jaxlib_does_not_know_is_left_out(monkeypatch):
    monkeypatch.setitem(_compile.CPU_OPTIONS, "xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_NO_SUCH")
    _compile.compiler_options.cache_clear()
    try:
        options = _compile.compiler_options()
        assert "xla_cpu_experimental_ynn_fusion_type" not in options
        assert float(_compile.jit(lambda x: x * 2)(jnp.float32(3))) == 6.0
    finally:
        monkeypatch.undo()
        _compile.compiler_options.cache_clear()


def test_the_level_is_o2_unless_xla_flags_name_one(monkeypatch):
    """-O2 for both option sets; a level named in XLA_FLAGS (the tests' -O0, tests/conftest.py) is left to win."""
    try:
        for flags, want in (("", 2), ("--xla_backend_optimization_level=0", None)):
            monkeypatch.setenv("XLA_FLAGS", flags)
            _compile.compiler_options.cache_clear()
            for vae in (False, True):
                assert _compile.compiler_options(vae).get("xla_backend_optimization_level") == want
    finally:
        monkeypatch.undo()
        _compile.compiler_options.cache_clear()


def _matmul_component():
    import flax.linen as nn

    from sana_jax.components import Component

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(64, use_bias=False)(x)

        def decode(self, x):
            return self(x) * 2

    module = Tiny()
    x = jnp.ones((64, 128))
    return Component("Tiny", None, module, module.init(jax.random.key(0), x)["params"], methods=("decode",)), x


def test_a_component_compiles_with_the_options_at_top_level_and_joins_a_callers_jit():
    """A component's forward and methods: at top level the program compiled with `_compile`'s options (its dot off
    YNNPACK); called inside a caller's jit, grad or vmap, a plain jit that becomes part of the caller's program
    (JAX refuses compiler options there), also when its inputs are concrete arrays the caller closed over."""
    _compile.compiler_options.cache_clear()
    tiny, x = _matmul_component()
    variables = {"params": tiny.params}
    assert "__ynn_fusion" not in tiny._apply.lower(variables, x).compile().as_text()
    want = x @ tiny.params["Dense_0"]["kernel"]
    # the last: concrete x closed over inside a caller's jit (no traced argument, yet under a trace)
    for got in (tiny(x), jax.jit(lambda v: tiny(v))(x), jax.vmap(tiny)(x[None])[0], jax.jit(lambda: tiny(x))()):
        assert jnp.allclose(got, want, rtol=1e-6)
    for got in (tiny.decode(x), jax.jit(tiny.decode)(x)):
        assert jnp.allclose(got, 2 * want, rtol=1e-6)
    grad = jax.grad(lambda v: tiny.decode(v).sum())(x)
    assert jnp.allclose(grad, 2 * jnp.broadcast_to(tiny.params["Dense_0"]["kernel"].sum(1), x.shape), atol=1e-5)
