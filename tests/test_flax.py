"""The Flax modules (NNX and Linen) and PyTorch weight interop: against torch.nn.ConvTranspose{1,2,3}d,
flax's own ConvTranspose and jax.lax for 'SAME'/'VALID', each other, and in training."""

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from hypothesis import given, settings
from oracle import HYPOTHESIS, Config, assert_close, configs

import transconv_jax as tc
from transconv_jax import linen as tcl
from transconv_jax import nnx as tcn
from transconv_jax._dispatch import FORMS
from transconv_jax._spec import lax_layout

# Every form a layer's method= may name.
METHODS = ["auto", *FORMS]

GRID = [
    # batch, c_in, c_out/g, groups, spatial, kernel, stride, padding, output_padding, dilation
    Config(2, 3, 2, 1, (5,), (3,), (2,), (1,), (1,), (1,)),
    Config(1, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)),
    Config(1, 4, 1, 4, (3, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # depthwise
    Config(1, 2, 2, 1, (2, 3), (4, 2), (3, 2), (1, 1), (0, 0), (2, 1)),  # strided and dilated
    Config(1, 1, 1, 1, (3,), (2,), (1,), (0,), (1,), (3,)),  # output_padding >= stride (< dilation)
    Config(1, 2, 2, 2, (2, 3, 2), (2, 3, 2), (2, 1, 3), (0, 1, 1), (1, 0, 2), (1, 2, 1)),
]


def torch_module(cfg: Config, bias: bool, seed: int = 0) -> torch.nn.Module:
    """A torch.nn.ConvTranspose{n}d for `cfg` with random weights (and a random, nonzero bias)."""
    torch.manual_seed(seed)
    cls = getattr(torch.nn, f"ConvTranspose{cfg.ndim}d")
    c_out = cfg.c_out_per_group * cfg.groups
    return cls(cfg.c_in, c_out, cfg.kernel, cfg.stride, cfg.padding, cfg.output_padding, cfg.groups, bias, cfg.dilation)


def nnx_layer(cfg: Config, bias: bool, method: str = "auto", **kwargs) -> tcn.ConvTranspose:
    c_out = cfg.c_out_per_group * cfg.groups
    return tcn.ConvTranspose(
        cfg.c_in, c_out, cfg.kernel, cfg.stride, padding=cfg.padding, output_padding=cfg.output_padding,
        kernel_dilation=cfg.dilation, feature_group_count=cfg.groups, use_bias=bias, method=method,
        rngs=nnx.Rngs(0), **kwargs,
    )  # fmt: skip


def linen_layer(cfg: Config, bias: bool, method: str = "auto") -> tcl.ConvTranspose:
    c_out = cfg.c_out_per_group * cfg.groups
    return tcl.ConvTranspose(
        c_out,
        cfg.kernel,
        cfg.stride,
        cfg.padding,
        cfg.dilation,
        bias,
        output_padding=cfg.output_padding,
        feature_group_count=cfg.groups,
        method=method,
    )


def channels_last(a) -> np.ndarray:
    return np.moveaxis(np.asarray(a), 1, -1)


def torch_value_and_grads(module, x, cot):
    """PyTorch's output (channels-last) and the gradients of <output, cot> as the Flax params and input."""
    tx = torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)
    out = module(tx)
    out.backward(torch.tensor(np.moveaxis(cot, -1, 1)))
    grads = tc.torch_to_flax(
        module.weight.grad, None if module.bias is None else module.bias.grad, kind="conv_transpose"
    )
    return channels_last(out.detach()), grads, np.moveaxis(tx.grad.numpy(), 1, -1)


def random_input(cfg: Config, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((cfg.batch, *cfg.spatial, cfg.c_in)).astype(np.float32)


def random_cotangent(cfg: Config, seed: int = 2) -> np.ndarray:
    shape = (cfg.batch, *cfg.out_spatial(), cfg.c_out_per_group * cfg.groups)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def inner(out, cot):
    return jnp.vdot(out, cot)


# ------------------------------------------------------------------------- parity with PyTorch


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_nnx_matches_torch_module(cfg, bias):
    check_nnx_against_torch(cfg, bias, "auto")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cfg", [GRID[1], GRID[5]], ids=str)
def test_every_method_matches_torch_module(cfg, method):
    check_nnx_against_torch(cfg, True, method)


def check_nnx_against_torch(cfg: Config, bias: bool, method: str):
    """The NNX layer holding a torch module's weights: PyTorch's value and gradients, under nnx.jit."""
    module = torch_module(cfg, bias)
    layer = nnx_layer(cfg, bias, method)
    tc.load_torch_weights(layer, module)
    x, cot = random_input(cfg), random_cotangent(cfg)
    ref, ref_grads, ref_gx = torch_value_and_grads(module, x, cot)
    out = nnx.jit(lambda m, x: m(x))(layer, x)
    grads, gx = nnx.jit(nnx.grad(lambda m, x: inner(m(x), cot), argnums=(0, 1)))(layer, jnp.asarray(x))
    assert_close(out, ref, err_msg=method)
    assert_close(gx, ref_gx, err_msg=method)
    assert set(ref_grads) == set(nnx.to_pure_dict(grads))
    for name, g in ref_grads.items():
        assert_close(grads[name][...], g, err_msg=f"{name} {method}")


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_linen_matches_torch_module(cfg):
    module = torch_module(cfg, bias=True, seed=1)
    layer = linen_layer(cfg, bias=True)
    params = {"params": tc.torch_to_flax(module)}
    x, cot = random_input(cfg), random_cotangent(cfg)
    ref, ref_grads, ref_gx = torch_value_and_grads(module, x, cot)
    out = jax.jit(layer.apply)(params, x)
    grads, gx = jax.jit(jax.grad(lambda p, x: inner(layer.apply(p, x), cot), argnums=(0, 1)))(params, x)
    assert_close(out, ref)
    assert_close(gx, ref_gx)
    assert_trees_close(grads["params"], ref_grads)


def assert_trees_close(tree, expected):
    """Same tree structure, every leaf close to float32 tolerance (oracle.assert_close)."""
    assert jax.tree.structure(tree) == jax.tree.structure(expected)
    jax.tree.map(assert_close, tree, expected)


@settings(HYPOTHESIS, max_examples=10)
@given(configs())
def test_random_configs_match_torch_module(cfg):
    module = torch_module(cfg, bias=True)
    layer = nnx_layer(cfg, bias=True)
    tc.load_torch_weights(layer, module)
    x = random_input(cfg)
    ref = channels_last(module(torch.tensor(np.moveaxis(x, -1, 1))).detach())
    assert_close(nnx.jit(lambda m, x: m(x))(layer, x), ref, err_msg=str(cfg))


def test_torch_decoder_state_dict_loads_into_nnx():
    """A small PyTorch generator's state_dict, loaded in one call, gives PyTorch's outputs."""
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, groups=2),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(4, 3, 3, padding=1, bias=False, dilation=1),
    )
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        tcn.ConvTranspose(8, 6, (3, 3), strides=2, padding=1, output_padding=1, rngs=rngs),
        nnx.relu,
        tcn.ConvTranspose(6, 4, (4, 4), strides=2, padding=1, feature_group_count=2, rngs=rngs),
        nnx.relu,
        tcn.ConvTranspose(4, 3, (3, 3), padding=1, use_bias=False, rngs=rngs),
    )
    tc.load_torch_state_dict(model, decoder.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 5)).astype(np.float32)
    out = nnx.jit(lambda m, x: m(x))(model, np.moveaxis(x, 1, -1))
    assert out.shape == (2, 20, 20, 3)
    assert_close(out, channels_last(decoder(torch.tensor(x)).detach()))


# --------------------------------------------------------- modelled on Flax's ConvTranspose tests


@pytest.mark.parametrize("use_bias", [True, False])
def test_int_kernel_size_is_a_1_tuple(use_bias):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 3)), jnp.float32)
    a = tcn.ConvTranspose(3, 4, 3, use_bias=use_bias, rngs=nnx.Rngs(0))
    b = tcn.ConvTranspose(3, 4, (3,), use_bias=use_bias, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(a(x), b(x))
    pa = tcl.ConvTranspose(4, 3, use_bias=use_bias).init(jax.random.key(0), x)
    pb = tcl.ConvTranspose(4, (3,), use_bias=use_bias).init(jax.random.key(0), x)
    assert_trees_close(pa, pb)
    assert a.kernel.shape == pa["params"]["kernel"].shape == (3, 3, 4)


@pytest.mark.parametrize("kernel_size", [(3,), (3, 2)])
def test_unbatched_and_multibatch_inputs(kernel_size):
    nd = len(kernel_size)
    layer = tcn.ConvTranspose(3, 4, kernel_size, strides=2, padding=1, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, *(5,) * nd, 3)), jnp.float32)
    flat = layer(x.reshape(6, *x.shape[2:]))
    multi = layer(x)
    assert multi.shape == (2, 3, *flat.shape[1:])
    assert_close(multi.reshape(flat.shape), flat)
    assert_close(layer(x[1, 2]), flat[5])
    linen = tcl.ConvTranspose(4, kernel_size, strides=2, padding=1)
    params = {"params": {"kernel": layer.kernel[...], "bias": layer.bias[...]}}
    assert_close(linen.apply(params, x), multi)
    assert_close(linen.apply(params, x[0, 0]), flat[0])


def test_empty_batch():
    layer = tcn.ConvTranspose(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    assert layer(jnp.zeros((0, 5, 5, 3))).shape == (0, 11, 11, 4)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(
    "kernel_size,strides,dilation", [((3,), 1, 1), ((3,), 2, 1), ((4, 3), (2, 3), 1), ((3, 3), 2, 2), ((2, 2), 3, 1)]
)
@pytest.mark.parametrize("use_bias", [True, False])
def test_string_padding_matches_flax(padding, kernel_size, strides, dilation, use_bias):
    """'SAME'/'VALID' mean what Flax's ConvTranspose(transpose_kernel=True) and jax.lax.conv_transpose mean."""
    nd = len(kernel_size)
    layer = tcn.ConvTranspose(
        3, 4, kernel_size, strides, padding=padding, kernel_dilation=dilation, use_bias=use_bias, rngs=nnx.Rngs(0)
    )
    flax_layer = flax.linen.ConvTranspose(
        4, kernel_size, strides, padding, kernel_dilation=dilation, use_bias=use_bias, transpose_kernel=True
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *(5,) * nd, 3)), jnp.float32)
    flax_params = {"kernel": jnp.swapaxes(layer.kernel[...], -1, -2)}  # Flax's (*k, out, in): the conv's kernel
    if use_bias:
        flax_params["bias"] = layer.bias[...]
    ref = flax_layer.apply({"params": flax_params}, x)
    assert_close(layer(x), ref)
    lax_ref = jax.lax.conv_transpose(
        x, flax_params["kernel"], (strides,) * nd if isinstance(strides, int) else strides, padding,
        rhs_dilation=(dilation,) * nd, dimension_numbers=lax_layout(nd, channels_last=True), transpose_kernel=True,
    )  # fmt: skip
    bias = layer.bias[...] if use_bias else jnp.zeros(4)
    assert_close(layer(x), lax_ref + bias.reshape((1,) * (nd + 1) + (4,)))


def test_bias_on_and_off():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 3)), jnp.float32)
    on = tcn.ConvTranspose(3, 4, (3, 3), strides=2, use_bias=True, rngs=nnx.Rngs(0))
    off = tcn.ConvTranspose(3, 4, (3, 3), strides=2, use_bias=False, rngs=nnx.Rngs(0))
    assert off.bias is None and on.bias.shape == (4,)
    assert set(nnx.to_pure_dict(nnx.state(off, nnx.Param))) == {"kernel"}
    off.kernel[...] = on.kernel[...]
    assert_close(on(x), off(x) + on.bias[...].reshape(1, 1, 1, 4))
    params = tcl.ConvTranspose(4, (3, 3), use_bias=False).init(jax.random.key(0), x)
    assert set(params["params"]) == {"kernel"}


def test_output_shape_in_call():
    """The U-Net case: 17 and 18 both go to 9 under a stride-2 conv; output_shape picks which comes back."""
    layer = tcn.ConvTranspose(2, 3, (3, 3), strides=2, padding=1, rngs=nnx.Rngs(0))
    linen = tcl.ConvTranspose(3, (3, 3), strides=2, padding=1)
    x = jnp.ones((1, 9, 9, 2))
    params = linen.init(jax.random.key(0), x)
    for shape in ((17, 17), (18, 18), (17, 18)):
        assert layer(x, output_shape=shape).shape == (1, *shape, 3)
        assert linen.apply(params, x, output_shape=shape).shape == (1, *shape, 3)
    with_op = tcn.ConvTranspose(2, 3, (3, 3), strides=2, padding=1, output_padding=(0, 1), rngs=nnx.Rngs(0))
    with_op.kernel[...], with_op.bias[...] = layer.kernel[...], layer.bias[...]
    np.testing.assert_array_equal(layer(x, output_shape=(17, 18)), with_op(x))


# --------------------------------------------------------------------------- NNX, Linen, dtypes


@pytest.mark.parametrize("cfg", GRID[:3], ids=str)
def test_nnx_equals_linen(cfg):
    layer = nnx_layer(cfg, bias=True)
    params = {"params": nnx.to_pure_dict(nnx.state(layer, nnx.Param))}
    x = random_input(cfg)
    np.testing.assert_array_equal(
        nnx.jit(lambda m, x: m(x))(layer, x), jax.jit(linen_layer(cfg, True).apply)(params, x)
    )


def test_nnx_jit_traces_once():
    """Static hyper-parameters (lists included) hash; new parameter values reuse the compiled call."""
    layer = tcn.ConvTranspose(2, 3, [3, 3], strides=[2, 1], padding=[(1, 0), (0, 1)], rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit
    def apply(model, x):
        traces.append(None)
        return model(x)

    x = jnp.ones((1, 4, 4, 2))
    first = apply(layer, x)
    layer.kernel[...] = 2 * layer.kernel[...]
    assert apply(layer, x).shape == first.shape == (1, 8, 5, 3)
    assert len(traces) == 1


@pytest.mark.parametrize("nd,groups", [(1, 1), (2, 2), (3, 1)])
def test_default_init_is_torchs(nd, groups):
    """Kernel and bias are uniform in +-1/sqrt(fan_in), fan_in = out/groups * prod(k): PyTorch's bound."""
    c_in, c_out, k = 16, 16, (3, 2, 2)[:nd]
    bound = 1 / np.sqrt(c_out // groups * np.prod(k))
    reference = getattr(torch.nn, f"ConvTranspose{nd}d")(c_in, c_out, k, groups=groups)
    for torch_param in (reference.weight, reference.bias):
        assert np.abs(torch_param.detach().numpy()).max() <= bound
    assert np.abs(reference.weight.detach().numpy()).max() >= 0.99 * bound  # the formula is PyTorch's
    layer = tcn.ConvTranspose(c_in, c_out, k, feature_group_count=groups, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    params = tcl.ConvTranspose(c_out, k, feature_group_count=groups).init(jax.random.key(0), jnp.ones((*k, c_in)))
    assert layer.kernel.shape == params["params"]["kernel"].shape == (*k, c_in, c_out // groups)
    assert layer.bias.shape == params["params"]["bias"].shape == (c_out,)
    assert layer.kernel.dtype == layer.bias.dtype == jnp.bfloat16
    assert params["params"]["kernel"].dtype == params["params"]["bias"].dtype == jnp.float32
    for kernel, bias in ((layer.kernel[...], layer.bias[...]), (params["params"]["kernel"], params["params"]["bias"])):
        kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
        assert bound * 0.99 <= np.abs(kernel).max() <= bound * 1.01  # 1 %: bfloat16 rounding
        assert abs(kernel.std() / (bound / np.sqrt(3)) - 1) < 0.05
        assert 0 < np.abs(bias).max() <= bound * 1.01


def test_mixed_precision_bf16_compute_f32_params():
    cfg = GRID[1]
    layer = nnx_layer(cfg, bias=True, dtype=jnp.bfloat16)
    x = random_input(cfg)
    out = layer(x)
    assert layer.kernel.dtype == layer.bias.dtype == jnp.float32 and out.dtype == jnp.bfloat16
    # The f32 oracle on bf16-rounded inputs and parameters; the result is rounded once more to bf16.
    rounded = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32)  # noqa: E731
    module = torch_module(cfg, bias=True)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(np.moveaxis(rounded(layer.kernel[...]), (-2, -1), (0, 1))))
        module.bias.copy_(torch.tensor(rounded(layer.bias[...])))
    ref = channels_last(module(torch.tensor(np.moveaxis(rounded(x), -1, 1))).detach())
    assert_close(np.asarray(out, np.float32), ref, rtol=2**-7)
    grads = nnx.grad(lambda m: inner(m(x).astype(jnp.float32), np.ones(out.shape, np.float32)))(layer)
    assert grads["kernel"][...].dtype == jnp.float32
    linen = tcl.ConvTranspose(
        6,
        cfg.kernel,
        cfg.stride,
        cfg.padding,
        cfg.dilation,
        output_padding=cfg.output_padding,
        feature_group_count=cfg.groups,
        dtype=jnp.bfloat16,
    )
    np.testing.assert_array_equal(linen.apply({"params": nnx.to_pure_dict(nnx.state(layer, nnx.Param))}, x), out)


# ------------------------------------------------------------------------------- training


def test_nnx_training_loss_falls():
    """nnx.jit + nnx.value_and_grad + optax: a student layer learns a teacher layer's map."""
    teacher = tcn.ConvTranspose(3, 2, (3, 3), strides=2, padding=1, output_padding=1, rngs=nnx.Rngs(1))
    student = tcn.ConvTranspose(3, 2, (3, 3), strides=2, padding=1, output_padding=1, rngs=nnx.Rngs(2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4, 4, 3)), jnp.float32)
    target = teacher(x)
    optimizer = nnx.Optimizer(student, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, target):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(student, optimizer, x, target)) for _ in range(40)]
    assert losses[-1] < 0.05 * losses[0], losses


def test_linen_init_apply_under_jit_and_training():
    layer = tcl.ConvTranspose(2, (3, 3), strides=2, padding=1, output_padding=1)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4, 4, 3)), jnp.float32)
    target = jax.jit(layer.apply)(jax.jit(layer.init)(jax.random.key(1), x), x)
    params = jax.jit(layer.init)(jax.random.key(2), x)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((layer.apply(p, x) - target) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(40):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0], losses


# ------------------------------------------------------------------------------- interop


def test_weight_conversion_round_trip():
    w = torch.randn(6, 2, 3, 4, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    params = tc.torch_to_flax(w, b, kind="conv_transpose")
    assert params["kernel"].shape == (3, 4, 5, 6, 2) and params["bias"].shape == (4,)
    np.testing.assert_array_equal(params["kernel"][1, 2, 3], w.detach().numpy()[:, :, 1, 2, 3])
    back = tc.flax_to_torch(params, kind="conv_transpose")
    np.testing.assert_array_equal(back["weight"], w.detach().numpy())
    np.testing.assert_array_equal(back["bias"], b.detach().numpy())
    layer = tcn.ConvTranspose(6, 4, (3, 4, 5), feature_group_count=2, rngs=nnx.Rngs(0))
    tc.load_torch_weights(layer, w, b, kind="conv_transpose")
    np.testing.assert_array_equal(tc.flax_to_torch(layer)["weight"], w.detach().numpy())
    module = torch.nn.ConvTranspose3d(6, 4, (3, 4, 5), groups=2)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in tc.flax_to_torch(layer).items()})
    np.testing.assert_array_equal(module.weight.detach().numpy(), w.detach().numpy())
    assert set(tc.torch_to_flax(w.detach().numpy(), kind="conv_transpose")) == {"kernel"}


def test_bfloat16_weights_convert():
    w = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    kernel = tc.torch_to_flax(w, kind="conv_transpose")["kernel"]
    assert kernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(kernel, np.float32), np.moveaxis(w.float().numpy(), (0, 1), (-2, -1)))


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=(2, 2, 2, 2)), r"kernel_size=\(2, 2, 2, 2\) must have 1, 2 or 3 entries"),
        (dict(kernel_size=2.0), r"kernel_size=2.0 must be an int or a tuple of ints"),
        (dict(kernel_size=(3, 3), feature_group_count=3), r"feature_group_count=3 must divide in_features=4"),
        (dict(kernel_size=(3, 3), feature_group_count=0), r"feature_group_count=0 must be a positive integer"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tcn.ConvTranspose(4, 6, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        tcl.ConvTranspose(6, **kwargs).init(jax.random.key(0), jnp.ones((2, 5, 5, 4)))


def test_call_errors():
    layer = tcn.ConvTranspose(4, 6, (3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x has shape \(5, 4\) but kernel_size=\(3, 3\) has 2 spatial axes"):
        layer(jnp.ones((5, 4)))
    with pytest.raises(ValueError, match=r"3 features on its last axis, but the layer has in_features=4"):
        layer(jnp.ones((5, 5, 3)))
    with pytest.raises(ValueError, match=r"output_padding=1 must be smaller than the stride"):
        tcn.ConvTranspose(4, 6, (3, 3), output_padding=1, rngs=nnx.Rngs(0))(jnp.ones((5, 5, 4)))
    with pytest.raises(ValueError, match=r"method='fast' is not one of"):
        tcn.ConvTranspose(4, 6, (3, 3), method="fast", rngs=nnx.Rngs(0))(jnp.ones((5, 5, 4)))


def test_load_errors():
    layer = tcn.ConvTranspose(4, 6, (3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"becomes kernel of shape \(3, 3, 6, 4\), but the layer's kernel has shape \(3, 3, 4, 6\)"
    ):
        tc.load_torch_weights(layer, torch.zeros(6, 4, 3, 3), torch.zeros(6), kind="conv_transpose")
    with pytest.raises(ValueError, match=r"the layer has a bias but bias is None; set use_bias=False"):
        tc.load_torch_weights(layer, torch.zeros(4, 6, 3, 3), kind="conv_transpose")
    with pytest.raises(ValueError, match=r"weight has shape \(4, 6\); a PyTorch ConvTranspose\{1,2,3\}d weight"):
        tc.torch_to_flax(np.zeros((4, 6), np.float32), kind="conv_transpose")
    with pytest.raises(TypeError, match=r"weight has dtype int64"):
        tc.torch_to_flax(np.zeros((4, 6, 3), np.int64), kind="conv_transpose")
    with pytest.raises(ValueError, match=r"kind='deconv' is not one of \('conv_transpose', 'conv', 'linear'\)"):
        tc.torch_to_flax(np.zeros((4, 6, 3), np.float32), kind="deconv")
    with pytest.raises(TypeError, match=r"params is a mapping, which does not say.*pass kind='conv_transpose'"):
        tc.flax_to_torch({"kernel": np.zeros((3, 4, 6), np.float32)})
    with pytest.raises(TypeError, match=r"layer is a ConvTranspose; give this library's ConvTranspose layer"):
        tc.load_torch_weights(nnx.ConvTranspose(4, 6, (3, 3), rngs=nnx.Rngs(0)), torch.nn.ConvTranspose2d(4, 6, 3))


# ------------------------------------------------------------ PyTorch-named layers, Flax's conventions


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_pytorch_named_layers_match_torch(nd):
    """ConvTranspose{n}d takes PyTorch's positional constructor, ints broadcast, and gives PyTorch's numbers."""
    torch.manual_seed(nd)
    module = getattr(torch.nn, f"ConvTranspose{nd}d")(4, 6, 3, 2, 1, 1, 2, True, 1)
    layer = getattr(tcn, f"ConvTranspose{nd}d")(4, 6, 3, 2, 1, 1, 2, True, 1, rngs=nnx.Rngs(0))
    assert layer.kernel.shape == (*(3,) * nd, 4, 3)
    tc.load_torch_weights(layer, module)
    x = np.random.default_rng(0).standard_normal((1, *(3,) * nd, 4)).astype(np.float32)
    ref = channels_last(module(torch.tensor(np.moveaxis(x, -1, 1))).detach())
    assert_close(layer(x), ref)
    linen = getattr(tcl, f"ConvTranspose{nd}d")(4, 6, 3, 2, 1, 1, 2, True, 1)
    assert_close(linen.apply({"params": tc.torch_to_flax(module)}, x), ref)
    init = linen.init(jax.random.key(0), x)["params"]
    assert init["kernel"].shape == layer.kernel.shape and init["bias"].shape == (6,)
    assert np.abs(init["kernel"]).max() <= 1 / np.sqrt(3 * 3**nd)  # PyTorch's bound, fan_in = out/g * prod(k)


def test_int_kernel_size_refused_on_rank_4_input():
    """The issue's trap: ConvTranspose(64, 32, 4, ...) on NHWC input would run a 1-D transposed conv along W."""
    match = r"kernel_size=4 is an int, which means one spatial axis, but x has shape \(2, 5, 5, 3\).*kernel_size=\(4, 4\), or use ConvTranspose2d"
    with pytest.raises(ValueError, match=match):
        tcn.ConvTranspose(3, 2, 4, strides=2, padding=1, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 5, 3)))
    with pytest.raises(ValueError, match=match):
        tcl.ConvTranspose(2, 4, 2, 1).init(jax.random.key(0), jnp.ones((2, 5, 5, 3)))
    assert tcn.ConvTranspose(3, 2, (4,), rngs=nnx.Rngs(0))(jnp.ones((2, 5, 5, 3))).shape == (2, 5, 8, 2)


def test_flax_conventions_in_signatures():
    """NNX: keyword-only after strides, as flax.nnx.Conv. Linen: flax.linen.ConvTranspose's field order, ours after."""
    import dataclasses
    import inspect

    params = inspect.signature(tcn.ConvTranspose.__init__).parameters
    positional = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == ["self", "in_features", "out_features", "kernel_size", "strides"]
    flax_params = inspect.signature(nnx.Conv.__init__).parameters
    for name in ("preferred_element_type", "promote_dtype", "kernel_metadata", "bias_metadata", "mask"):
        assert params[name].kind == flax_params[name].kind == inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError):
        tcn.ConvTranspose(3, 2, (3, 3), 2, 1, rngs=nnx.Rngs(0))
    ours = [f.name for f in dataclasses.fields(tcl.ConvTranspose) if f.name not in ("parent", "name")]
    theirs = [f.name for f in dataclasses.fields(flax.linen.ConvTranspose) if f.name not in ("parent", "name")]
    theirs.remove("transpose_kernel")  # ours is always PyTorch's kernel
    assert ours[: len(theirs)] == theirs
    assert ours[len(theirs) :] == ["output_padding", "feature_group_count", "method"]
    torch_params = list(inspect.signature(torch.nn.ConvTranspose2d.__init__).parameters)[1:10]
    assert list(inspect.signature(tcn.ConvTranspose2d.__init__).parameters)[1:10] == torch_params
    assert [f.name for f in dataclasses.fields(tcl.ConvTranspose2d)][:9] == torch_params


def test_preferred_element_type_promote_dtype_and_mask():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 4, 2)), jnp.bfloat16)
    layer = tcn.ConvTranspose(
        2, 3, (3, 3), 2, param_dtype=jnp.bfloat16, preferred_element_type=jnp.float32, rngs=nnx.Rngs(0)
    )
    out = layer(x)
    assert out.dtype == jnp.float32
    ref = tc.conv_transpose(
        x,
        layer.kernel[...],
        layer.bias[...],
        2,
        dimension_numbers=lax_layout(2, True),
        preferred_element_type=jnp.float32,
    )
    np.testing.assert_array_equal(out, ref)
    calls = []

    def promote(arrays, dtype=None):
        calls.append(dtype)
        return tuple(None if a is None else a.astype(jnp.float32) for a in arrays)

    promoted = tcn.ConvTranspose(2, 3, (3, 3), 2, param_dtype=jnp.bfloat16, promote_dtype=promote, rngs=nnx.Rngs(0))
    assert promoted(x).dtype == jnp.float32 and calls == [None]
    mask = np.zeros((3, 3, 2, 3), np.float32)
    mask[1, 1] = 1
    masked = tcn.ConvTranspose(2, 3, (3, 3), mask=mask, rngs=nnx.Rngs(0))
    plain = tcn.ConvTranspose(2, 3, (3, 3), use_bias=False, rngs=nnx.Rngs(0))
    plain.kernel[...] = masked.kernel[...] * mask
    x32 = x.astype(jnp.float32)
    assert_close(masked(x32), plain(x32) + masked.bias[...].reshape(1, 1, 1, 3))
    linen_params = {"params": nnx.to_pure_dict(nnx.state(masked, nnx.Param))}
    assert_close(tcl.ConvTranspose(3, (3, 3), mask=mask).apply(linen_params, x32), masked(x32))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\) but the kernel has shape \(3, 3, 2, 3\)"):
        tcn.ConvTranspose(2, 3, (3, 3), mask=np.ones((3, 3)), rngs=nnx.Rngs(0))(x32)
