"""method='scatter' (GEMM + col2im) against PyTorch, the vjp form and the adjoint facts it must keep."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import oracle
import pytest
from hypothesis import given, settings
from oracle import HYPOTHESIS, Config, assert_close, check_against_torch, configs, torch_conv_transpose

import transconv_jax as tc
from transconv_jax import _scatter, _subpixel
from transconv_jax._dispatch import auto_forms, auto_method
from transconv_jax._scatter import adds_by_axis, conv_transpose_scatter_form, transposes_by_axis

GRID = [
    *oracle.GRID,
    Config(1, 2, 2, 1, (3,), (5,), (1,), (3,), (0,), (1,)),  # tap 0 is cropped away entirely
    Config(2, 2, 1, 1, (3, 2), (1, 2), (3, 4), (0, 0), (2, 3), (1, 1)),  # kernel < stride: some phases get no tap
    Config(1, 3, 2, 3, (2, 2), (3, 2), (2, 3), (2, 0), (1, 2), (3, 2)),  # groups, stride and dilation together
    # im2col axis by axis in the backward (`transposes_by_axis`), with dilation, and the crop removing taps 0-2 of axis 0
    Config(1, 2, 2, 1, (1, 4), (7, 6), (3, 2), (5, 1), (0, 1), (2, 1)),
    Config(2, 4, 1, 2, (2, 3, 2), (3, 3, 4), (2, 1, 3), (1, 0, 2), (1, 0, 0), (1, 2, 1)),  # ... 3-D, groups
    # one input element (`one_element`): the columns are the output; crops, output_padding's zeros, groups
    Config(2, 4, 3, 2, (1, 1), (4, 3), (2, 3), (1, 0), (1, 2), (1, 1)),
    Config(3, 5, 2, 1, (1,), (4,), (1,), (0,), (0,), (1,)),
    Config(1, 2, 2, 1, (1, 1, 1), (2, 3, 2), (1, 2, 1), (0, 1, 0), (0, 1, 0), (1, 1, 1)),
]


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_grid_matches_torch(cfg):
    check_against_torch(cfg, "scatter")


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_grid_matches_torch_by_tap(cfg, monkeypatch):
    """The grid again with the backward's im2col one slice per tap on every layer (the library's
    where no taps overlap, `transposes_by_axis`)."""
    monkeypatch.setattr(_scatter, "transposes_by_axis", lambda kernel, stride: False)
    check_against_torch(cfg, "scatter")


@HYPOTHESIS
@given(configs())
def test_random_configs_match_torch(cfg):
    check_against_torch(cfg, "scatter", seed=7)


# Taps that do not overlap (`kernel <= stride`, no dilation): on channels-last arrays the scatter form
# computes these channels-last (`blocks_channels_last`).
BLOCKS = [
    Config(2, 4, 3, 1, (3, 4), (2, 2), (2, 2), (0, 0), (0, 0), (1, 1)),  # U-Net k2 s2
    Config(2, 2, 1, 1, (3, 2), (1, 2), (3, 4), (0, 0), (2, 3), (1, 1)),  # kernel < stride, output_padding
    Config(2, 3, 2, 1, (5,), (2,), (3,), (2,), (1,), (1,)),  # a crop that removes a whole tap at the start
    Config(1, 4, 2, 2, (2, 3, 2), (2, 1, 2), (2, 2, 3), (1, 0, 0), (1, 1, 0), (1, 1, 1)),  # 3-D, groups
    Config(2, 3, 2, 1, (1, 1), (2, 2), (2, 2), (0, 1), (0, 1), (1, 1)),  # one input element
]


@pytest.mark.parametrize("cfg", GRID + BLOCKS, ids=str)
def test_grid_matches_torch_channels_last(cfg):
    check_against_torch(cfg, "scatter", channels_last=True)


@settings(HYPOTHESIS, max_examples=15)
@given(configs())
def test_random_configs_match_torch_channels_last(cfg):
    check_against_torch(cfg, "scatter", seed=8, channels_last=True)


def test_auto_on_channels_last_dilated_stride_1_runs_the_convolution():
    """Channels-last, a dilated stride-1 layer is the vjp form's convolution, forward and both gradients
    (channels-first: scatter's GEMM forward); the values are torch's either way."""
    cfg = oracle.GRID[4]  # stride 1, dilated, few channels: the vjp form's forward in both layouts
    wide = dataclasses.replace(cfg, c_in=64)
    spec = wide.spec()
    last = dataclasses.replace(spec, channels_last=True)
    assert auto_forms(last, wide.y_shape, wide.w_shape, "cpu") == ("vjp", "vjp", "vjp")
    assert auto_forms(spec, wide.y_shape, wide.w_shape, "cpu") == ("scatter", "vjp", "vjp")
    assert auto_forms(cfg.spec(), cfg.y_shape, cfg.w_shape, "cpu") == ("vjp", "vjp", "vjp")
    for channels_last in (True, False):
        check_against_torch(cfg, "auto", channels_last=channels_last)


def test_auto_on_stride_1_takes_the_convolutions_gradients(monkeypatch):
    """Rule 3 of `auto_method` without dilation: both gradients are the vjp form's convolutions, but
    where subpixel's windows exceed im2col's budget (its per-tap scan) with at least 64 input
    channels (the suite's stride-1 layer), subpixel's input gradient and scatter's kernel gradient
    (the cotangent's columns, axis by axis; subpixel's on channels-last arrays). The forward is
    scatter's GEMM from 64 input channels on and the vjp form's convolution below (few input
    channels make a GEMM with a short inner dimension and a col2im as large as ever). The values
    are torch's in both layouts, the mixed gradients on a small layer with the windows' budget
    lowered to reach them."""
    s1 = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), output_padding=(0, 0), dilation=(1, 1))
    wide, narrow = Config(2, 64, 8, 1, (6, 6), **s1), Config(2, 16, 8, 1, (6, 6), **s1)
    assert _picks(wide) == ["scatter", "vjp", "vjp"]
    assert _picks(narrow) == ["vjp", "vjp", "vjp"]
    assert _picks(Config(8, 128, 64, 1, (32, 32), **s1)) == ["scatter", "subpixel", "scatter"]  # 42 MB of windows
    assert _picks(Config(4, 16, 16, 1, (128, 128), **s1)) == ["vjp", "vjp", "vjp"]  # 39 MB, 16 channels
    dilated = dict(s1, padding=(2, 2), dilation=(2, 2))
    assert _picks(Config(8, 32, 32, 1, (64, 64), **dilated)) == ["vjp", "vjp", "vjp"]  # few input channels
    assert _picks(Config(8, 64, 64, 1, (32, 32), **dilated)) == ["scatter", "vjp", "vjp"]  # the suite's dilated layer
    for cfg in (wide, narrow):
        for channels_last in (False, True):
            check_against_torch(cfg, "auto", channels_last=channels_last)
    monkeypatch.setattr(_subpixel, "_SCAN_BYTES", 2**10)
    jax.clear_caches()  # `conv_transpose` caches its traces
    assert _picks(wide) == ["scatter", "subpixel", "scatter"]
    last = dataclasses.replace(wide.spec(), channels_last=True)
    assert auto_forms(last, wide.y_shape, wide.w_shape, "cpu") == ("scatter", "subpixel", "subpixel")
    for channels_last in (False, True):
        check_against_torch(wide, "auto", channels_last=channels_last)
    jax.clear_caches()


@pytest.mark.parametrize(
    "cfg, channels_last, path",
    [
        (BLOCKS[0], True, "blocks"),  # k2 s2: `blocks_channels_last`
        (GRID[2], True, "columns"),  # 2-D k3 s2, overlapping taps: channels-last columns and col2im
        (oracle.GRID[1], True, "columns"),  # 1-D
        (oracle.GRID[8], True, None),  # 3-D k3 s2: the canonical path (channels-last was slower there)
        (BLOCKS[0], False, None),
        (GRID[2], False, None),
    ],
    ids=str,
)
def test_channels_last_callers_get_the_channels_last_paths(cfg, channels_last, path, monkeypatch):
    """The Flax layers' layout computes channels-last where it measured faster; channels-first never does."""
    calls = []
    for name in ("blocks_channels_last", "_columns_channels_last"):
        real = getattr(_scatter, name)
        monkeypatch.setattr(_scatter, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    jax.clear_caches()
    check_against_torch(cfg, "scatter", channels_last=channels_last)
    expected = {"blocks": {"blocks_channels_last", "_columns_channels_last"}, "columns": {"_columns_channels_last"}}
    assert set(calls) == expected.get(path, set())


@settings(HYPOTHESIS, max_examples=8)
@given(configs())
def test_random_configs_match_vjp_form(cfg):
    """Value and both gradients equal those of the defining form, for one random cotangent."""
    y, w = map(jnp.asarray, cfg.arrays(3))
    cot = jnp.asarray(
        np.random.default_rng(4).standard_normal((cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())),
        jnp.float32,
    )
    results = {}
    for method in ("scatter", "vjp"):
        out, vjp = jax.vjp(jax.jit(lambda y, w, m=method: tc.conv_transpose(y, w, **cfg.kwargs, method=m)), y, w)
        results[method] = (out, *vjp(cot))
    for name, a, b in zip(("value", "grad y", "grad w"), results["scatter"], results["vjp"], strict=True):
        assert_close(a, b, err_msg=f"{name} {cfg}")


def _primitive_counts(cfg, scale):
    """How often the scatter form's program, and its backward alone, use a dot, a pad and a convolution
    (counted into the custom_jvp's inner jaxprs), with the batch and every spatial size times `scale`."""
    y, w = jnp.ones((cfg.batch * scale, cfg.c_in, *(n * scale for n in cfg.spatial))), jnp.ones(cfg.w_shape)
    spec = cfg.spec()
    form = lambda y, w: conv_transpose_scatter_form(y, w, spec)  # noqa: E731
    out, backward = jax.vjp(form, y, w)
    counts = []
    for jaxpr in (jax.make_jaxpr(form)(y, w).jaxpr, jax.make_jaxpr(backward)(out).jaxpr):
        eqns = list(_equations(jaxpr))
        pads = [e.params["padding_config"] for e in eqns if e.primitive.name == "pad"]
        assert all(interior == 0 for config in pads for _, _, interior in config), "a zero-inserting pad"
        names = [e.primitive.name for e in eqns]
        counts.append((names.count("dot_general"), names.count("pad"), names.count("conv_general_dilated")))
    return counts


def _most_pieces(jaxpr) -> int:
    """The most pieces one `split` cuts or one `concatenate` joins in `jaxpr`: the taps where col2im
    (or its transpose, the backward's im2col) takes each tap apart, the taps of one axis where it
    goes axis by axis. (Counting pads does not tell: a tap that lands where it is needs none.)"""
    pieces = {"split": lambda e: len(e.outvars), "concatenate": lambda e: len(e.invars)}
    return max(pieces[e.primitive.name](e) for e in _equations(jaxpr) if e.primitive.name in pieces)


def _equations(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for sub in jax.extend.core.jaxprs_in_params(e.params):
            yield from _equations(sub)


@pytest.mark.parametrize("cfg", [GRID[2], GRID[5], GRID[7], oracle.GRID[8], GRID[-4]], ids=str)
def test_loops_over_taps_only(cfg):
    """Forward: one dot, and one pad per kernel tap (XLA fuses them into one pass); no convolution
    (so no lhs_dilation) and no interior padding. Backward: two dots, and im2col of the cotangent
    as one slice per tap, or, where `transposes_by_axis`, per tap of each axis (`sum(kernel)`, not
    `prod(kernel)`), plus the crop of the interleave. The same program for any batch and spatial size."""
    small, large = _primitive_counts(cfg, 1), _primitive_counts(cfg, 3)
    assert small == large
    assert small[0][0] == 1 and small[0][2] == 0
    assert small[0][1] <= math.prod(cfg.kernel) + 1
    uneven = any(s > 1 and k % s for k, s in zip(cfg.kernel, cfg.stride))  # `transposes_by_axis`: k3 s2
    overlap = any(k > s for k, s in zip(cfg.kernel, cfg.stride))  # ... wherever taps overlap
    by_axis = uneven or overlap or math.prod(cfg.kernel) >= 3 * sum(cfg.kernel)  # ... 3-D k3, FCN-8s's k16
    taps = sum(cfg.kernel) if by_axis else math.prod(cfg.kernel)
    assert small[1][0] == 2 and small[1][2] == 0
    assert small[1][1] <= taps + 1


MANY_TAPS = {
    "3-D k3 s2": Config(2, 3, 2, 1, (4, 5, 3), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "2-D k4 s2": Config(2, 16, 8, 1, (4, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # a DCGAN generator's
}


@pytest.mark.parametrize("method", ["scatter", "auto"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", MANY_TAPS)
def test_many_taps_add_by_axis_under_a_gradient(name, method, channels_last):
    """On a kernel of many taps (`adds_by_axis`: 3-D k3; 2-D k4 s2) the forward alone adds them one
    pad per tap in one pass; differentiated, its value adds them axis by axis (several small kernels
    for LLVM, where the sum by tap, materialized before a bias and a ReLU, took it over a second on
    the one and most of `auto`'s extra compile time of a DCGAN generator on the other). The forward,
    and the value and gradients of `jax.vjp`, are torch's."""
    cfg = MANY_TAPS[name]
    assert adds_by_axis(cfg.kernel, cfg.stride) and adds_by_axis((16, 16), (8, 8))
    assert not adds_by_axis((3, 3), (2, 2)) and not adds_by_axis((5, 5), (1, 1)) and not adds_by_axis((4, 4), (2, 1))
    assert auto_method(cfg.spec(), cfg.y_shape, cfg.w_shape, platform="cpu") == "scatter"  # auto's forward
    y, w = (jnp.asarray(a) for a in cfg.arrays())
    spatial = "DHW"[-cfg.ndim :]
    options = dict(dimension_numbers=(f"N{spatial}C", f"IO{spatial}", f"N{spatial}C")) if channels_last else {}
    y = jnp.moveaxis(y, 1, -1) if channels_last else y
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=method, **options)  # noqa: E731

    assert _most_pieces(jax.make_jaxpr(f)(y, w).jaxpr) == math.prod(cfg.kernel)
    assert _most_pieces(jax.make_jaxpr(lambda y, w: jax.vjp(f, y, w)[0])(y, w).jaxpr) == max(cfg.kernel)
    for grads in (False, True):
        check_against_torch(cfg, method, grads=grads, channels_last=channels_last)


def test_by_axis_tangent_is_the_same_map():
    """The tangent of `_col2im` (col2im axis by axis: forward mode, and transposed, the backward)
    against PyTorch: jvp in both arguments equals `torch(ty, w) + torch(y, tw)`."""
    cfg = GRID[-5]
    assert transposes_by_axis(cfg.kernel, cfg.stride)
    y, w = cfg.arrays(1)
    ty, tw = cfg.arrays(2)
    f = jax.jit(lambda y, w: tc.conv_transpose_scatter(y, w, **cfg.kwargs))
    _, tangent = jax.jvp(f, (jnp.asarray(y), jnp.asarray(w)), (jnp.asarray(ty), jnp.asarray(tw)))
    assert_close(tangent, torch_conv_transpose(ty, w, cfg) + torch_conv_transpose(y, tw, cfg))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("nd", [2, 3])
def test_by_axis_passes_run_on_four_axes(nd, channels_last):
    """On one device, each pass of `col2im_by_axis` and of its transpose (the backward's im2col)
    pads, slices and concatenates arrays of at most four axes (`_add_taps_of_axis`'s view; LLVM
    compiled such fusions several times faster than on the columns' six axes), and equals
    PyTorch. With more devices the passes keep every axis, so that GSPMD keeps the batch and
    spatial shardings (`tests/test_sharding.py` checks that in a child process of 8 devices)."""
    assert jax.device_count() == 1
    cfg = Config(2, 3, 2, 1, (5, 4, 3)[:nd], (3,) * nd, (2,) * nd, (1,) * nd, (1,) * nd, (1,) * nd)
    out_spatial = tuple(2 * n for n in cfg.spatial)  # k3 s2 p1 op1
    n, c = cfg.batch, cfg.c_out_per_group
    cols = jnp.zeros((n, *cfg.spatial, *cfg.kernel, c) if channels_last else (c, *cfg.kernel, n, *cfg.spatial))
    col2im = lambda cols: _scatter.col2im_by_axis(cols, cfg.spec(), out_spatial, channels_last)  # noqa: E731
    im2col = jax.linear_transpose(col2im, cols)
    out = jax.eval_shape(col2im, cols)
    for jaxpr in (jax.make_jaxpr(col2im)(cols).jaxpr, jax.make_jaxpr(im2col)(out).jaxpr):
        ranks = [e.outvars[0].aval.ndim for e in _equations(jaxpr) if e.primitive.name in ("pad", "concatenate")]
        assert len(ranks) >= nd and max(ranks) <= 4, ranks
    check_against_torch(cfg, "scatter", grads=True, channels_last=channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_columns_are_one_batched_gemm_both_ways(groups, channels_last):
    """On one device the scatter form's GEMM, and both of its transposes in the backward, are
    products of three-axis arrays `(g, rows, cols)`: the kernel `(g, C_out / g * taps, C_in / g)`
    and the input `(g, C_in / g, N * spatial)` (channels-last callers: the input `(g, N *
    spatial, C_in / g)` and the kernel `(g, C_in / g, taps * C_out / g)`), so that the input
    gradient multiplies the cotangent's columns as they are (XLA:CPU copied them into the
    transposed layout first when the input's spatial axes stayed apart); values and gradients
    equal PyTorch."""
    assert jax.device_count() == 1
    cfg = Config(2, 4, 3, groups, (5, 4), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    y, w = (jnp.asarray(a) for a in cfg.arrays())
    spec = dataclasses.replace(cfg.spec(), channels_last=channels_last)
    form = lambda y, w: conv_transpose_scatter_form(y, w, spec)  # noqa: E731
    out, vjp = jax.vjp(form, y, w)
    for jaxpr in (jax.make_jaxpr(form)(y, w).jaxpr, jax.make_jaxpr(vjp)(out).jaxpr):
        dots = [e for e in _equations(jaxpr) if e.primitive.name == "dot_general"]
        assert dots and all(v.aval.ndim == 3 for e in dots for v in e.invars), [e.invars for e in dots]
    check_against_torch(cfg, "scatter", channels_last=channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_element_input_is_scatter_under_auto(channels_last):
    """A DCGAN generator's first layer (1x1 -> 4x4, k4 s1): `auto` takes the scatter form for the
    forward and both gradients on CPU (one GEMM each, no col2im), and equals PyTorch, on the
    arrays as the Flax layers hold them too (`_tile`'s channels-last columns); so do a cropped
    and a grouped 1-D one-element layer, the second extended by `output_padding`."""
    cfg = Config(8, 16, 32, 1, (1, 1), (4, 4), (1, 1), (0, 0), (0, 0), (1, 1))
    assert _picks(cfg) == ["scatter"] * 3
    check_against_torch(cfg, "auto", channels_last=channels_last)
    for cfg in (
        Config(2, 6, 5, 1, (1, 1), (4, 3), (1, 2), (1, 0), (0, 1), (1, 1)),
        Config(2, 4, 3, 2, (1,), (3,), (2,), (1,), (1,), (1,)),
    ):
        check_against_torch(cfg, "scatter", channels_last=channels_last)


def _picks(cfg):
    """What `auto` runs for `cfg` on CPU: the forward's form, the input gradient's and the kernel gradient's."""
    return [auto_method(cfg.spec(), cfg.y_shape, cfg.w_shape, derivatives=d) for d in (None, "input", "kernel")]


@pytest.mark.parametrize("channels_last", [False, True])
def test_3d_stride_1_layers_take_gemm_forms_under_auto(channels_last):
    """3-D stride 1 (`auto_method`'s rule 3 in 3-D): no convolution, XLA:CPU's 3-D ones being
    several times slower. Where subpixel's shifted windows of the padded input fit im2col (no scan
    over the taps), its forward (GEMMs on CPU) but on small layers (`small_columns`), and its
    gradients below 64 input channels; the scatter form's otherwise, but past im2col the vjp form's
    forward where scatter's col2im is largest. Values and gradients equal
    PyTorch's, dilated and cropped too, in both layouts, under `auto` and the subpixel form."""
    s1 = dict(kernel=(3, 3, 3), stride=(1, 1, 1), padding=(1, 1, 1), output_padding=(0, 0, 0), dilation=(1, 1, 1))
    assert _picks(Config(2, 32, 32, 1, (12, 12, 12), **s1)) == ["subpixel"] * 3  # windows: 27 x 2 x 14^3 x 32 x 4 B
    assert _picks(Config(2, 32, 32, 1, (16, 16, 16), **s1)) == ["scatter"] * 3  # 27 x 2 x 18^3 x 32 x 4 B > 32 MiB
    # past im2col, a wider output or 125 taps: the vjp form's forward (scatter's col2im grows with both)
    assert _picks(Config(2, 32, 64, 1, (16, 16, 16), **s1)) == ["vjp", "scatter", "scatter"]
    k5 = dict(s1, kernel=(5, 5, 5), padding=(2, 2, 2))
    assert _picks(Config(2, 32, 32, 1, (16, 16, 16), **k5)) == ["vjp", "scatter", "scatter"]
    assert _picks(Config(2, 64, 64, 1, (10, 10, 10), **s1)) == ["subpixel", "scatter", "scatter"]
    assert _picks(Config(2, 128, 64, 1, (8, 8, 8), **s1)) == ["scatter"] * 3  # 2 x 8^3 x 27 taps x 64 < 2**21 columns
    for cfg in (
        Config(2, 5, 4, 1, (4, 3, 5), **s1),
        Config(1, 3, 2, 1, (5, 4, 4), (3, 2, 3), (1, 1, 1), (2, 0, 1), (0, 0, 0), (2, 1, 2)),  # dilated, cropped
        Config(1, 64, 3, 1, (3, 4, 3), **s1),
    ):
        gradients = "scatter" if cfg.c_in >= 64 else "subpixel"
        assert _picks(cfg) == ["scatter", gradients, gradients]  # small layers: scatter's forward
        check_against_torch(cfg, "auto", channels_last=channels_last)
        check_against_torch(cfg, "subpixel", channels_last=channels_last)


def test_small_layers_take_scatter_under_auto():
    """Rule 5 of `auto_method` (the phases fuse) by size. While the scatter form's columns have at
    most 2**21 elements (`small_columns`: a DCGAN generator's layers up to 16x16 -> 32x32), `auto`
    takes scatter's forward and kernel gradient, and its input gradient too below 64 channels;
    above, subpixel's. Values and both gradients equal PyTorch's on small layers of both kinds,
    channels-first and channels-last (the Flax layers' layout, scatter's channels-last columns)."""
    k4s2 = dict(kernel=(4, 4), stride=(2, 2), padding=(1, 1), output_padding=(0, 0), dilation=(1, 1))
    g4 = Config(8, 128, 64, 1, (16, 16), **k4s2)  # columns: 8 * 16 * 16 * 16 taps * 64 = 2**21
    g5 = Config(8, 64, 3, 1, (32, 32), **k4s2)
    dcgan = Config(8, 128, 64, 1, (32, 32), **k4s2)  # 2**23
    assert _picks(g4) == ["scatter", "vjp", "scatter"]
    assert _picks(g5) == ["scatter", "scatter", "scatter"]
    assert _picks(dcgan) == ["subpixel", "vjp", "subpixel"]
    for cfg in (Config(2, 64, 64, 1, (4, 4), **k4s2), Config(2, 8, 3, 1, (8, 8), **k4s2)):
        assert _picks(cfg)[0] == _picks(cfg)[2] == "scatter"
        check_against_torch(cfg, "auto")
        check_against_torch(cfg, "auto", channels_last=True)


def test_k4s2_kernel_gradient_is_scatters_up_to_2_22_columns():
    """`scatter_kernel_gradient`: a 2-D k4 s2 layer of at most 2**22 columns (DCGAN 16x16) takes
    scatter's kernel gradient on channels-first float32 arrays, on CPU and GPU alike (one program
    to trace); at 2**23 (DCGAN 32x32), channels-last and in half precision, not. The mixed
    gradients equal PyTorch's, in both layouts."""
    k4s2 = dict(kernel=(4, 4), stride=(2, 2), padding=(1, 1), output_padding=(0, 0), dilation=(1, 1))
    dcgan16, dcgan32 = Config(8, 256, 128, 1, (16, 16), **k4s2), Config(8, 128, 64, 1, (32, 32), **k4s2)
    assert _picks(dcgan16) == ["subpixel", "vjp", "scatter"]
    assert _picks(dcgan32) == ["subpixel", "vjp", "subpixel"]
    last = dataclasses.replace(dcgan16.spec(), channels_last=True)
    assert auto_forms(last, dcgan16.y_shape, dcgan16.w_shape, "cpu")[2] == "subpixel"
    assert auto_forms(dcgan16.spec(), dcgan16.y_shape, dcgan16.w_shape, "cuda")[2] == "scatter"
    for platform in ("cpu", "cuda"):  # half precision: unmeasured, the rule by size (cuda: the vjp form)
        assert auto_forms(dcgan16.spec(), dcgan16.y_shape, dcgan16.w_shape, platform, jnp.bfloat16)[2] != "scatter"
    narrow = Config(8, 8, 128, 1, (16, 16), **k4s2)  # 2**22 columns, few input channels
    assert _picks(narrow) == ["subpixel", "subpixel", "scatter"]
    for channels_last in (False, True):
        check_against_torch(narrow, "auto", channels_last=channels_last)


def test_backward_im2col_axis_by_axis_where_taps_overlap():
    """The backward's im2col takes `sum(kernel)` slices wherever taps overlap, on large layers as on
    small ones (k4 s2 with 2**23 columns, k3 s1), and `prod(kernel)` where they do not (k3 s3:
    one tap per phase; `transposes_by_axis`)."""
    k4s2 = Config(8, 8, 64, 1, (32, 32), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1))  # columns: 2**23 elements
    k3s1 = Config(2, 8, 4, 1, (9, 7), (3, 3), (1, 1), (1, 1), (0, 0), (1, 1))
    k3s3 = Config(2, 8, 4, 1, (5, 6), (3, 3), (3, 3), (0, 0), (0, 0), (1, 1))
    for cfg in (k4s2, k3s1):
        assert _primitive_counts(cfg, 1)[1][1] <= sum(cfg.kernel) + 1
    y, w = jnp.ones(k3s3.y_shape), jnp.ones(k3s3.w_shape)
    out, backward = jax.vjp(lambda y, w: conv_transpose_scatter_form(y, w, k3s3.spec()), y, w)
    assert _most_pieces(jax.make_jaxpr(backward)(out).jaxpr) == math.prod(k3s3.kernel)
    for cfg in (k3s1, k3s3):
        check_against_torch(cfg, "scatter")


def test_tutorial_picture():
    """Each input element paints the kernel, scaled, into the output at stride spacing; overlaps add."""
    y = jnp.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    expected = [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]
    np.testing.assert_array_equal(tc.conv_transpose_scatter(y, y, stride=2)[0, 0], expected)
    np.testing.assert_array_equal(tc.conv_transpose_scatter(y, y)[0, 0], [[0, 0, 1], [0, 4, 6], [4, 12, 9]])
    np.testing.assert_array_equal(tc.conv_transpose_scatter(y, y, padding=1)[0, 0], [[4]])


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride,kernel,dilation", [(2, 3, 1), (3, 2, 1), (2, 3, 2)])
def test_string_padding_and_layout_match_vjp(padding, stride, kernel, dilation):
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.standard_normal((2, 5, 6, 3)), jnp.float32)  # NHWC
    w = jnp.asarray(rng.standard_normal((kernel, kernel + 1, 3, 4)), jnp.float32)  # HWIO
    kw = dict(stride=stride, padding=padding, dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert_close(tc.conv_transpose(y, w, **kw, method="scatter"), tc.conv_transpose(y, w, **kw, method="vjp"))


@pytest.mark.parametrize("dn", [("NCHW", "OIHW", "NHWC"), ("NHWC", "IOHW", "NCHW")])
def test_dimension_numbers_match_torch(dn):
    cfg = GRID[2]
    y, w = cfg.arrays()
    perm = lambda spec, canon: tuple(canon.index(c) for c in spec)  # noqa: E731
    out = tc.conv_transpose(
        y.transpose(perm(dn[0], "NCHW")),
        w.transpose(perm(dn[1], "IOHW")),
        **cfg.kwargs,
        dimension_numbers=dn,
        method="scatter",
    )
    assert_close(out, torch_conv_transpose(y, w, cfg).transpose(perm(dn[2], "NCHW")))


def test_transformations():
    cfg = GRID[2]
    y, w = map(jnp.asarray, cfg.arrays())
    f = lambda y, w: tc.conv_transpose_scatter(y, w, **cfg.kwargs)  # noqa: E731
    assert_close(jax.vmap(lambda y: f(y[None], w)[0])(y), f(y, w))
    assert_close(jax.vmap(f, in_axes=(None, 0))(y, jnp.stack([w, 2 * w])), jnp.stack([f(y, w), f(y, 2 * w)]))
    _, tangent = jax.jvp(f, (y, w), (y, jnp.zeros_like(w)))
    assert_close(tangent, f(y, w))  # linear in y


def test_adjoint_identity():
    """<conv(x), y> == <x, scatter(y)> on a config without output_padding (no crop of the conv's input)."""
    cfg = GRID[5]
    y, w = cfg.arrays(5)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((1, 1, *cfg.out_spatial())), jnp.float32)
    lhs = jnp.vdot(tc.conv(x, w, None, cfg.stride, cfg.padding, cfg.dilation, cfg.groups), y)
    rhs = jnp.vdot(x, tc.conv_transpose_scatter(y, w, **cfg.kwargs))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def test_empty_batch_and_half_precision():
    w = jnp.ones((4, 3, 3, 3))
    assert tc.conv_transpose_scatter(np.ones((0, 4, 5, 5), np.float32), w, stride=2).shape == (0, 3, 11, 11)
    y, w = map(jnp.asarray, GRID[2].arrays())
    out = tc.conv_transpose_scatter(y.astype(jnp.bfloat16), w.astype(jnp.bfloat16), **GRID[2].kwargs)
    assert out.dtype == jnp.bfloat16
    ref = tc.conv_transpose_vjp(y.astype(jnp.bfloat16), w.astype(jnp.bfloat16), **GRID[2].kwargs)
    assert_close(out.astype(jnp.float32), ref.astype(jnp.float32), rtol=1e-2)


BAD = [
    ({"groups": 3}, ValueError, r"groups=3 must divide the 4 input channels"),
    ({"stride": 2, "output_padding": 2}, ValueError, r"output_padding=2 must be smaller than the stride"),
    ({"padding": 4}, ValueError, r"output would have spatial shape \(-1, -1\)"),
    ({"dilation": (1, 0)}, ValueError, r"dilation=\(1, 0\): every entry must be >= 1"),
    ({"padding": "FULL"}, ValueError, r"padding='FULL' must be an int, a tuple of ints, 'SAME' or 'VALID'"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=str)
def test_bad_arguments_rejected_before_the_form(kwargs, exc, match):
    y, w = jnp.ones((1, 4, 5, 5)), jnp.ones((4, 3, 3, 3))
    with pytest.raises(exc, match=match):
        jax.eval_shape(lambda y, w: tc.conv_transpose_scatter(y, w, **kwargs), y, w)


def test_bad_dtype_rejected():
    with pytest.raises(TypeError, match=r"input has dtype int32; integer or bool dtypes"):
        tc.conv_transpose_scatter(jnp.ones((1, 4, 5, 5), jnp.int32), jnp.ones((4, 3, 3, 3)))
