"""Sub-pixel conversions both ways, PixelShuffle layers, overlap counts and ICNR, against PyTorch and conv_transpose."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from oracle import HYPOTHESIS, TORCH_CONV, TORCH_CONV_T, Config, assert_close, configs, torch_conv_transpose

import transconv_jax as tc
from transconv_jax import linen
from transconv_jax import nnx as tc_nnx
from transconv_jax._convert import tie_phases
from transconv_jax._flax import default_kernel_init
from transconv_jax.initializers import icnr


def _crop(x, crop):
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] * 2 + [(-lo, -hi, 0) for lo, hi in crop])


# ------------------------------------------------------------------ as_subpixel_conv


@HYPOTHESIS
@given(configs())
def test_subpixel_conv_equals_torch_conv_transpose_and_converts_back(cfg):
    """Pad, conv, shuffle, crop == PyTorch's conv_transpose; its conv converted back gives it again."""
    y, w = cfg.arrays()
    b = np.random.default_rng(1).standard_normal(cfg.c_out_per_group * cfg.groups).astype(np.float32)
    sp = tc.as_subpixel_conv(w, **cfg.kwargs)
    back = tc.as_conv_transpose(sp.weight, sp.upscale, groups=sp.groups)
    both = jax.jit(lambda y, b: (sp(y, b), _crop(back(_crop(y, [(-lo, -hi) for lo, hi in sp.input_padding])), sp.crop)))
    there, back_again = both(y, b)
    ref = torch_conv_transpose(y, w, cfg)
    assert_close(there, ref + b.reshape(1, -1, *(1,) * cfg.ndim), err_msg=str(cfg))
    assert_close(back_again, ref, err_msg=f"back {cfg}")


SQUARE = [  # 2-D, equal strides: PyTorch's pixel_shuffle takes one factor
    Config(2, 3, 2, 1, (5, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # DCGAN
    Config(1, 2, 3, 1, (4, 5), (3, 3), (2, 2), (1, 0), (1, 1), (1, 1)),  # k3 s2: a zero tap in phase 1
    Config(1, 4, 3, 2, (3, 4), (5, 3), (3, 3), (2, 1), (2, 0), (1, 2)),  # groups, dilation, output_padding
    Config(1, 3, 1, 3, (4, 4), (3, 3), (2, 2), (3, 0), (0, 1), (2, 2)),  # depthwise, d = s: empty phases
]


@pytest.mark.parametrize("cfg", SQUARE, ids=str)
def test_subpixel_weights_run_in_torch(cfg):
    """`F.pixel_shuffle(F.conv2d(F.pad(x, ...), sp.weight, groups=g), r)`, cropped, is `F.conv_transpose2d`."""
    y, w = cfg.arrays(2)
    sp = tc.as_subpixel_conv(w, **cfg.kwargs)
    pad = [p for lo_hi in reversed(sp.input_padding) for p in lo_hi]  # F.pad wants the last axis first
    z = F.pad(torch.from_numpy(y), pad)
    z = F.pixel_shuffle(F.conv2d(z, torch.from_numpy(np.array(sp.weight)), groups=sp.groups), sp.upscale[0])
    (h0, h1), (w0, w1) = sp.crop
    z = z[..., h0 : z.shape[-2] - h1, w0 : z.shape[-1] - w1]
    assert_close(z.numpy(), torch_conv_transpose(y, w, cfg))


def test_subpixel_conv_shapes_and_phase_channel_order():
    """k4 s2 p1: k' = 2, one pixel of padding each side; channel c * 4 + phase holds that phase's taps."""
    w = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    sp = tc.as_subpixel_conv(w, stride=2, padding=1)
    assert (sp.weight.shape, sp.input_padding, sp.crop, sp.upscale) == (
        (12, 2, 2, 2),
        ((1, 1),) * 2,
        ((1, 1),) * 2,
        (2, 2),
    )
    # output channel 1, phase (row 1, col 0): taps k = 1, 3 (rows), 0, 2 (cols), flipped for the correlation
    np.testing.assert_array_equal(sp.weight[1 * 4 + 2, 0], w[0, 1][np.ix_([3, 1], [2, 0])])
    y = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)  # unbatched, as PyTorch allows
    assert_close(sp(y), tc.conv_transpose(y[None], w, stride=2, padding=1)[0])


# ------------------------------------------------------------------ as_conv_transpose


@st.composite
def conv_shuffles(draw):
    """A stride-1 conv + pixel shuffle: per-axis factors, groups (not always dividing C_out), uneven padding."""
    nd = draw(st.sampled_from([1, 2, 3]))
    axis = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(nd))  # noqa: E731
    r, kernel, spatial = axis(1, 3), axis(1, 3), axis(1, 4 if nd < 3 else 2)
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_out = draw(st.integers(1, 3))
    while (c_out * math.prod(r)) % groups:
        c_out += 1
    pads = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in kernel)
    spatial = tuple(max(n, k - lo - hi) for n, k, (lo, hi) in zip(spatial, kernel, pads))  # a non-empty conv
    c_in = groups * draw(st.integers(1, 2))
    return nd, r, kernel, spatial, groups, c_out, c_in, pads


@HYPOTHESIS
@given(conv_shuffles())
def test_conv_transpose_equals_torch_conv_then_pixel_shuffle(case):
    nd, r, kernel, spatial, groups, c_out, c_in, pads = case
    rng = np.random.default_rng(3)
    w = rng.standard_normal((c_out * math.prod(r), c_in // groups, *kernel)).astype(np.float32)
    x = rng.standard_normal((2, c_in, *spatial)).astype(np.float32)
    b = rng.standard_normal(c_out * math.prod(r)).astype(np.float32)
    xt = F.pad(torch.from_numpy(x), [p for lo_hi in reversed(pads) for p in lo_hi])
    ref = TORCH_CONV[nd](xt, torch.from_numpy(w), torch.from_numpy(b), groups=groups).numpy()
    a = tc.as_conv_transpose(w, r, pads, groups)
    assert_close(jax.jit(a)(x, b), tc.pixel_shuffle(ref, r), err_msg=str(case))


def test_gradients_flow_through_both_conversions():
    """The converted weights are functions of the original one: gradients equal conv_transpose's."""
    cfg = Config(2, 4, 3, 2, (5, 6), (3, 4), (2, 3), (1, 0), (1, 2), (1, 1))
    x, w = (jnp.asarray(a) for a in cfg.arrays(21))
    g = jnp.asarray(np.random.default_rng(22).standard_normal((2, 6, *cfg.out_spatial())), jnp.float32)
    direct = jax.grad(lambda x, w: jnp.vdot(tc.conv_transpose(x, w, **cfg.kwargs), g), (0, 1))(x, w)
    via_conv = jax.grad(lambda x, w: jnp.vdot(tc.as_subpixel_conv(w, **cfg.kwargs)(x), g), (0, 1))(x, w)
    for a, b in zip(via_conv, direct, strict=True):
        assert_close(a, b)
    # and back: conv + pixel shuffle as a ConvTranspose, differentiated in the conv's weight
    cw = jnp.asarray(np.random.default_rng(23).standard_normal((12, 4, 3, 3)), jnp.float32)
    shuffled = lambda cw: tc.pixel_shuffle(tc.conv(x, cw, None, 1, 1), 2)  # noqa: E731
    gs = jnp.asarray(np.random.default_rng(24).standard_normal(shuffled(cw).shape), jnp.float32)
    expected = jax.grad(lambda cw: jnp.vdot(shuffled(cw), gs))(cw)
    assert_close(jax.grad(lambda cw: jnp.vdot(tc.as_conv_transpose(cw, 2, conv_padding=1)(x), gs))(cw), expected)


def test_espcn_loads_into_the_nnx_layer():
    """ESPCN's last layer (conv k3 p1, 3 * 3^2 channels, shuffle 3) as a ConvTranspose layer with a channel bias."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((27, 8, 3, 3)).astype(np.float32)
    b = np.repeat(rng.standard_normal(3).astype(np.float32), 9)
    x = rng.standard_normal((1, 8, 6, 5)).astype(np.float32)
    ref = F.pixel_shuffle(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1), 3)
    a = tc.as_conv_transpose(w, 3, conv_padding=1)
    assert (a.weight.shape, a.kwargs()["padding"]) == ((8, 3, 9, 9), (3, 3))
    layer = tc_nnx.ConvTranspose(8, 3, (9, 9), strides=a.stride, padding=a.padding, rngs=nnx.Rngs(0))
    tc.load_torch_weights(layer, a.weight, a.channel_bias(b), kind="conv_transpose")
    assert_close(layer(x[0].transpose(1, 2, 0)), ref.numpy()[0].transpose(1, 2, 0))


def test_uneven_conv_padding_gives_padding_pairs():
    a = tc.as_conv_transpose(np.ones((4, 1, 3, 3), np.float32), 2, conv_padding="SAME")
    assert a.kwargs() == dict(stride=(2, 2), padding=(2, 2), output_padding=(0, 0), groups=1)
    a = tc.as_conv_transpose(np.ones((4, 1, 2, 3), np.float32), 2, conv_padding="SAME")
    assert a.padding == ((2, 0), (2, 2))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: tc.as_subpixel_conv(np.ones((2, 2, 3), np.int32), 2), TypeError, "weight has dtype int32"),
        (lambda: tc.as_subpixel_conv(np.ones((2, 3), np.float32), 2), ValueError, r"weight has shape \(2, 3\)"),
        (lambda: tc.as_subpixel_conv(np.ones((3, 2, 3), np.float32), 2, groups=2), ValueError, "groups=2 must divide"),
        (
            lambda: tc.as_subpixel_conv(np.ones((2, 2, 3), np.float32), 2, output_padding=2),
            ValueError,
            "output_padding",
        ),
        (
            lambda: tc.as_subpixel_conv(np.ones((2, 2, 3), np.float32), 2)(np.ones((1, 2, 3, 3), np.float32)),
            ValueError,
            "rank 3",
        ),
        (
            lambda: tc.as_subpixel_conv(np.ones((1, 1, 3), np.float32), 1, padding=2)(np.ones((1, 1, 1), np.float32)),
            ValueError,
            "larger input",
        ),
        (lambda: tc.as_conv_transpose(np.ones((4, 1, 3), np.float32), 2, conv_padding=3), ValueError, "at most k - 1"),
        (lambda: tc.as_conv_transpose(np.ones((6, 1, 3), np.float32), 4), ValueError, "need a multiple"),
        (lambda: tc.as_conv_transpose(np.ones((4, 1, 3), np.float32), 0), ValueError, "upscale_factor=0"),
        (
            lambda: tc.as_conv_transpose(np.ones((4, 1, 3), np.float32), 2).channel_bias(np.arange(4.0)),
            ValueError,
            "periodic",
        ),
        (lambda: tie_phases(jnp.ones((3, 3, 1, 1)), 2), ValueError, "multiple of its stride"),
        (lambda: tc.overlap_counts((3, 3), (2, 2, 2)), ValueError, "3 entries but there are 2"),
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------- PixelShuffle layers


@pytest.mark.parametrize(
    "factor,shape", [(2, (3, 4, 5, 8)), ((3,), (2, 5, 6)), ((1, 2, 3), (2, 3, 2, 6)), (2, (0, 2, 2, 4))]
)
def test_pixel_shuffle_layers_are_torch_channels_last(factor, shape):
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    r = (factor,) * 2 if isinstance(factor, int) else factor
    batch = x.shape[: x.ndim - len(r) - 1]
    first = np.moveaxis(x, -1, len(batch)).reshape(-1, x.shape[-1], *x.shape[len(batch) : -1])
    if len(r) == 2 and r[0] == r[1]:
        ref = F.pixel_shuffle(torch.from_numpy(first), r[0]).numpy()
    else:
        ref = np.asarray(tc.pixel_shuffle(first, r))
    ref = np.moveaxis(ref.reshape(*batch, *ref.shape[1:]), len(batch), -1)
    np.testing.assert_array_equal(tc_nnx.PixelShuffle(factor)(x), ref)
    np.testing.assert_array_equal(linen.PixelShuffle(factor).apply({}, x), ref)


# ------------------------------------------------------------------------ overlap counts


@pytest.mark.parametrize(
    "kernel,stride,dilation",
    [
        (3, 2, 1),
        (4, 2, 1),
        (5, 3, 1),
        (3, 2, 2),
        (4, 3, 2),
        (1, 3, 1),
        ((3, 4), (2, 2), 1),
        ((3, 2, 5), (2, 1, 3), (1, 2, 1)),
    ],
)
def test_overlap_counts_are_a_ones_conv_transpose_in_torch(kernel, stride, dilation):
    """The interior of PyTorch's transposed conv of ones with a ones kernel, one period of it."""
    nd = len(kernel) if isinstance(kernel, tuple) else 1
    k, s, d = (np.broadcast_to(v, nd) for v in (kernel, stride, dilation))
    start = [si * -(-(di * (ki - 1)) // si) for ki, si, di in zip(k, s, d)]  # first full period, a multiple of s
    n = [-(-(di * (ki - 1)) // si) + 2 for ki, si, di in zip(k, s, d)]
    out = TORCH_CONV_T[nd](
        torch.ones(1, 1, *n), torch.ones(1, 1, *k), stride=tuple(map(int, s)), dilation=tuple(map(int, d))
    )[0, 0].numpy()
    brute = out[tuple(slice(a, a + si) for a, si in zip(start, s))]
    counts = tc.overlap_counts(kernel, stride, dilation)
    assert counts.dtype.kind == "i" and counts.shape == tuple(s)
    np.testing.assert_array_equal(counts, brute)
    assert tc.checkerboard_free(kernel, stride, dilation) == (len(np.unique(brute)) == 1)


# -------------------------------------------------------------------------------- ICNR


def _interior(y, kernel):
    """Drop `k` rows at each end of every spatial axis of `(batch, *spatial, C)`: the borders."""
    return y[(slice(None), *(slice(k, -k) for k in kernel))]


def test_icnr_nnx_has_no_checkerboard_and_the_default_does():
    """Constant input: ICNR's output is constant away from the borders; PyTorch's default init is periodic."""
    x = jnp.ones((2, 8, 8, 4))
    spread = {}
    for name, init in (("icnr", icnr(2)), ("default", default_kernel_init)):
        layer = tc_nnx.ConvTranspose(
            4, 6, (4, 4), strides=2, padding=1, kernel_init=init, use_bias=False, rngs=nnx.Rngs(1)
        )
        y = _interior(layer(x), (4, 4))
        spread[name] = float(jnp.max(jnp.abs(y - y[:, :1, :1])))
    assert spread["icnr"] < 1e-5, spread
    assert spread["default"] > 1e-2, spread  # the checkerboard that ICNR removes


@pytest.mark.parametrize("kernel,stride,groups", [((6,), (3,), 1), ((4, 2, 4), (2, 1, 2), 2)])
def test_icnr_linen_phases_equal(kernel, stride, groups):
    """Linen, 1-D and 3-D with groups: every phase of the sub-pixel conv is the same, and the output is constant."""
    layer = linen.ConvTranspose(4, kernel, strides=stride, feature_group_count=groups, kernel_init=icnr(stride))
    x = jnp.ones((1, *(5,) * len(kernel), 2))
    params = layer.init(jax.random.key(0), x)
    y = _interior(layer.apply(params, x), kernel)
    y = y.reshape(-1, 4)
    assert float(jnp.max(jnp.abs(y - y[:1]))) < 1e-5
    k = params["params"]["kernel"]
    w = np.moveaxis(np.moveaxis(np.asarray(k), -2, 0), -1, 1)  # PyTorch's layout (in, out // g, *k)
    sp = tc.as_subpixel_conv(w, stride, groups=groups)
    phases = np.asarray(sp.weight).reshape(4, math.prod(stride), *sp.weight.shape[1:])
    np.testing.assert_array_equal(phases, np.broadcast_to(phases[:, :1], phases.shape))
    bound = 1 / math.sqrt(4 // groups * math.prod(kernel))  # base_init's distribution on the full shape
    assert float(jnp.max(jnp.abs(k))) <= bound
