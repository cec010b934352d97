"""The subpixel form and method='auto' against PyTorch, the vjp form and numerical derivatives."""

import math

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given, settings
from oracle import GRID, HYPOTHESIS, Config, assert_close, check_against_torch, configs

import transconv_jax as tc
from transconv_jax import _subpixel
from transconv_jax._spec import Spec
from transconv_jax._subpixel import plan

FUSED = [
    Config(2, 4, 3, 1, (4, 5), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # DCGAN
    Config(1, 4, 2, 2, (3, 3, 2), (2, 2, 2), (2, 2, 2), (0, 0, 0), (0, 0, 0), (1, 1, 1)),  # V-Net, grouped
    Config(1, 2, 3, 1, (4,), (16,), (8,), (4,), (0,), (1,)),  # HiFi-GAN
    Config(2, 3, 2, 1, (3, 4), (6, 3), (3, 1), (2, 0), (1, 0), (1, 2)),  # k % s == 0 with d > 1 on a stride-1 axis
]


@pytest.mark.parametrize("cfg", GRID + FUSED, ids=str)
@pytest.mark.parametrize("method", ["subpixel", "auto"])
def test_grid_matches_torch(cfg, method):
    check_against_torch(cfg, method)


@pytest.fixture
def one_tap_at_a_time(monkeypatch):
    """Every shifted window over `_SCAN_BYTES`: `_tap_matmuls` scans over the taps (large layers, e.g.
    a GPU's batch of U-Net k3 s2), which no layer of the grid reaches otherwise."""
    monkeypatch.setattr(_subpixel, "_SCAN_BYTES", 0)
    jax.clear_caches()  # `conv_transpose`'s jit would return programs traced without the patch
    yield
    jax.clear_caches()


@pytest.mark.parametrize("cfg", GRID + FUSED, ids=str)
def test_grid_matches_torch_one_tap_at_a_time(cfg, one_tap_at_a_time):
    check_against_torch(cfg, "subpixel")


@HYPOTHESIS
@given(configs())
def test_random_configs_match_torch(cfg):
    check_against_torch(cfg, "subpixel")


@settings(HYPOTHESIS, max_examples=10)
@given(configs())
def test_auto_random_configs_match_torch(cfg):
    check_against_torch(cfg, "auto", seed=4)


@pytest.mark.parametrize(
    "kernel,stride,dilation,fused",
    [
        (4, 2, 1, True),
        (2, 2, 1, True),
        (16, 8, 1, True),
        (3, 1, 2, True),
        (3, 2, 1, False),
        (4, 2, 2, False),
        (5, 3, 2, False),
    ],
)
def test_plan_fuses_exactly_when_phases_align(kernel, stride, dilation, fused):
    spec = Spec((stride,), ((1, 0),), (dilation,), 1)
    (axis,) = plan((5,), (kernel,), spec)
    assert axis.fused == fused
    taps = sorted(t for p in axis.phases for t in p.taps)
    assert taps == list(range(kernel))  # every tap in exactly one phase: no zero is multiplied


@pytest.mark.parametrize("cfg", [GRID[2], GRID[5], GRID[7], FUSED[0], FUSED[1]], ids=str)
def test_gradients_equal_the_vjp_form(cfg):
    y, w = map(jnp.asarray, cfg.arrays(5))
    g = jnp.asarray(
        np.random.default_rng(6).standard_normal((cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())),
        jnp.float32,
    )

    def grads(method):
        out, vjp = jax.vjp(lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=method), y, w)
        return (out, *vjp(g))

    for name, a, b in zip(
        ("value", "grad y", "grad w"),
        jax.jit(lambda: grads("subpixel"))(),
        jax.jit(lambda: grads("vjp"))(),
        strict=False,
    ):
        assert_close(a, b, err_msg=name)


def test_forward_mode_equals_the_vjp_form():
    cfg = GRID[2]
    y, w = map(jnp.asarray, cfg.arrays(8))
    ty, tw = map(jnp.asarray, cfg.arrays(9))
    jvp = lambda m: jax.jvp(lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=m), (y, w), (ty, tw))  # noqa: E731
    for a, b in zip(jvp("subpixel"), jvp("vjp"), strict=False):
        assert_close(a, b)


@pytest.mark.parametrize("cfg", [FUSED[0], GRID[2], GRID[5], FUSED[1]], ids=str)
def test_no_zero_insertion_forward_or_backward(cfg):
    """Neither pass dilates an input (lhs_dilation) or pads one with interior zeros.

    The one interior pad allowed is the kernel gradient's: the transpose of the strided slice
    that takes each phase's taps (`take_taps`), on arrays no larger than the kernel.
    """
    y, w = map(jnp.asarray, cfg.arrays())
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="subpixel")  # noqa: E731
    fwd_bwd = lambda y, w: jax.vjp(f, y, w)[1](f(y, w))  # noqa: E731
    eqns = list(_equations(jax.make_jaxpr(fwd_bwd)(y, w).jaxpr))
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    pads = [e for e in eqns if e.primitive.name == "pad"]
    assert convs or cfg.groups > 1  # grouped: the forward is im2col GEMMs, no convolution at all
    assert all(set(e.params["lhs_dilation"]) == {1} for e in convs)
    interior = [e for e in pads if any(i for _, _, i in e.params["padding_config"])]
    assert all(math.prod(e.outvars[0].aval.shape) <= w.size for e in interior)


def _equations(jaxpr):
    """Every equation, also those inside jit, custom_jvp and checkpoint sub-jaxprs."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)
