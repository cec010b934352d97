"""conv and conv_transpose (the vjp form and method='auto') against PyTorch, jax.lax and the adjoint identity."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from oracle import (
    GRID,
    HYPOTHESIS,
    TORCH_CONV,
    Config,
    assert_close,
    check_against_torch,
    configs,
    torch_conv_transpose,
)

import transconv_jax as tc


@pytest.mark.parametrize("cfg", GRID, ids=str)
@pytest.mark.parametrize("method", ["vjp", "auto"])
def test_grid_matches_torch(cfg, method):
    check_against_torch(cfg, method)


@HYPOTHESIS
@given(configs())
def test_random_configs_match_torch(cfg):
    check_against_torch(cfg, "vjp")


@HYPOTHESIS
@given(configs())
def test_conv_matches_torch(cfg):
    x_shape = (cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(cfg.w_shape).astype(np.float32)  # as a conv weight: (C_out, C_in // g, *k)
    out = jax.jit(lambda x, w: tc.conv(x, w, None, cfg.stride, cfg.padding, cfg.dilation, cfg.groups))(x, w)
    ref = TORCH_CONV[cfg.ndim](
        torch.tensor(x), torch.tensor(w), None, cfg.stride, cfg.padding, cfg.dilation, cfg.groups
    )
    assert_close(out, ref.numpy())


@HYPOTHESIS
@given(configs())
def test_adjoint_identity(cfg):
    """<conv(x), y> == <x, conv_transpose(y)>, with the conv cropped where output_padding reaches past it."""
    y, w = cfg.arrays(2)
    x = np.random.default_rng(3).standard_normal((cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial()))
    x = jnp.asarray(x, jnp.float32)
    z = tc.conv_transpose(y, w, **cfg.kwargs)
    # The conv's input reaches only so far: where output_padding exceeds padding, crop x's end first.
    crop = tuple(slice(0, n - max(op - p, 0)) for n, p, op in zip(x.shape[2:], cfg.padding, cfg.output_padding))
    pads = [(p, max(p - op, 0)) for p, op in zip(cfg.padding, cfg.output_padding)]
    cx = tc.conv(x[(..., *crop)], w, None, cfg.stride, pads, cfg.dilation, cfg.groups)
    lhs, rhs = jnp.vdot(cx, y), jnp.vdot(x, z)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4 * float(jnp.abs(cx).sum() * jnp.abs(y).max()))


def test_tutorial_examples():
    x = jnp.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    np.testing.assert_array_equal(tc.conv_transpose(x, x)[0, 0], [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    np.testing.assert_array_equal(tc.conv_transpose(x, x, padding=1)[0, 0], [[4]])
    expected = [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]
    np.testing.assert_array_equal(tc.conv_transpose(x, x, stride=2)[0, 0], expected)
    x = jnp.ones((1, 10, 16, 16))
    w = jnp.ones((20, 10, 5, 5))
    assert tc.conv_transpose(tc.conv(x, w, None, 3, 2), w, None, 3, 2).shape == x.shape


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride,kernel,dilation", [(1, 3, 1), (2, 3, 1), (2, 4, 1), (3, 2, 1), (2, 3, 2), (4, 1, 1)])
def test_string_padding_matches_lax(padding, stride, kernel, dilation):
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.standard_normal((2, 5, 6, 3)), jnp.float32)  # NHWC
    w = jnp.asarray(rng.standard_normal((kernel, kernel + 1, 3, 4)), jnp.float32)  # HWIO
    dn = ("NHWC", "HWIO", "NHWC")
    # lax with transpose_kernel=True takes the forward conv's kernel: its O is our I.
    ref = jax.lax.conv_transpose(
        y,
        jnp.swapaxes(w, 2, 3),
        (stride, stride),
        padding,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=dn,
        transpose_kernel=True,
    )
    out = tc.conv_transpose(y, w, None, stride, padding, dilation=dilation, dimension_numbers=dn)
    assert_close(out, ref)


@pytest.mark.parametrize("dn", [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NHWC"), ("NHWC", "IOHW", "NCHW")])
def test_dimension_numbers(dn):
    cfg = Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1))
    y, w = cfg.arrays()
    ref = torch_conv_transpose(y, w, cfg)  # NCHW, IOHW
    perm = lambda spec, canon: tuple(canon.index(c) for c in spec)  # noqa: E731
    y_l = y.transpose(perm(dn[0], "NCHW"))
    w_l = w.transpose(perm(dn[1], "IOHW"))
    out = tc.conv_transpose(y_l, w_l, **cfg.kwargs, dimension_numbers=dn)
    assert_close(out, ref.transpose(perm(dn[2], "NCHW")))


def test_output_shape_picks_output_padding():
    """The U-Net case: a stride-2 conv maps both 17 and 18 to 9; output_shape says which one we want."""
    y, w = jnp.ones((1, 2, 9, 9)), jnp.ones((2, 3, 3, 3))
    for size in (17, 18):
        x = jnp.ones((1, 3, size, size))
        assert tc.conv(x, jnp.ones((2, 3, 3, 3)), None, 2, 1).shape[2:] == (9, 9)
        assert tc.conv_transpose(y, w, None, 2, 1, output_shape=(size, size)).shape == (1, 3, size, size)
    assert tc.conv_transpose(y, w, None, 2, 1, output_shape=(17, 18)).shape == (1, 3, 17, 18)


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_shape_helpers_agree_with_eval_shape(cfg):
    shape = jax.eval_shape(lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs), *cfg.arrays()).shape
    assert shape[2:] == cfg.out_spatial()
    x = jax.ShapeDtypeStruct((1, cfg.c_out_per_group * cfg.groups, *shape[2:]), jnp.float32)
    conv = lambda x, w: tc.conv(x, w, None, cfg.stride, cfg.padding, cfg.dilation, cfg.groups)  # noqa: E731
    conv_shape = jax.eval_shape(conv, x, jax.ShapeDtypeStruct(cfg.w_shape, jnp.float32)).shape
    assert conv_shape[2:] == tc.conv_output_shape(shape[2:], cfg.kernel, cfg.stride, cfg.padding, cfg.dilation)


def test_transformations():
    cfg = GRID[2]
    y, w = map(jnp.asarray, cfg.arrays())
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs)  # noqa: E731
    batched = jax.vmap(lambda y: f(y[None], w)[0])(y)
    assert_close(batched, f(y, w))
    _, tangent = jax.jvp(f, (y, w), (y, jnp.zeros_like(w)))
    assert_close(tangent, f(y, w))  # linear in y


def test_accepts_numpy_and_lists():
    out = tc.conv_transpose(np.ones((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))
    np.testing.assert_array_equal(out, [[[1, 2, 1]]])


CHECK_GRADS_CHILD = """
import sys; sys.path.insert(0, "tests")
import jax; jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from jax.test_util import check_grads
from oracle import GRID
from test_subpixel import FUSED
import transconv_jax as tc
from transconv_jax._dispatch import FORMS
method = sys.argv[1]
for cfg in (GRID[1], FUSED[1]):  # strided, output_padding, groups; the fused subpixel plan
    y, w = (jnp.asarray(a, jnp.float64) for a in cfg.arrays(dtype=np.float64))
    bias = jnp.arange(cfg.c_out_per_group * cfg.groups, dtype=jnp.float64)
    f = jax.jit(lambda y, w, b: tc.conv_transpose(y, w, b, **cfg.kwargs, method=method))
    check_grads(f, (y, w, bias), order=2, modes=("fwd", "rev"))  # default float64 tolerances
print("ok")
"""


@pytest.mark.parametrize("method", ["vjp", "matmul", "scatter", "subpixel", "auto"])
def test_check_grads_order_2_in_float64_at_default_tolerances(method):
    """Numerical derivatives need float64: every form, forward and reverse mode, orders 1 and 2, bias included."""
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_GRADS_CHILD, method], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("method", ["vjp", "matmul", "scatter", "subpixel", "auto"])
def test_pytorch_positional_calls_copied_over(method, batched):
    """`F.conv_transpose2d(x, w, b, 2, 1, 0, 2, 1)` copied with its positional arguments gives PyTorch's numbers:
    groups comes before dilation, bias is third, and an unbatched `(C, H, W)` input gives an unbatched result."""
    cfg = Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 2))  # groups 2, dilation (1, 2): order matters
    y, w = cfg.arrays(11)
    b = np.random.default_rng(12).standard_normal(6).astype(np.float32)
    y = y if batched else y[0]
    args = (cfg.stride, cfg.padding, cfg.output_padding, cfg.groups, cfg.dilation)
    ref = F.conv_transpose2d(torch.tensor(y), torch.tensor(w), torch.tensor(b), *args).numpy()
    out = tc.conv_transpose(y, w, b, *args, method=method)
    assert out.shape == ref.shape
    assert_close(out, ref)
    x = np.random.default_rng(13).standard_normal(ref.shape).astype(np.float32)
    cb = np.random.default_rng(14).standard_normal(4).astype(np.float32)
    conv_args = (cfg.stride, cfg.padding, cfg.dilation, cfg.groups)  # conv's own order: dilation, then groups
    x = x[..., : ref.shape[-2] - 1, : ref.shape[-1] - 2]  # the conv's input: cropped where output_padding reached
    conv_ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(cb), *conv_args).numpy()
    assert_close(tc.conv(x, w, cb, *conv_args), conv_ref)
