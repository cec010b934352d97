"""Dtypes, special values, degenerate shapes, retracing and a fuzz test, for every method (sharding: test_sharding.py)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import Config, assert_close, check_against_torch, default_codegen_flags, torch_conv_transpose

import transconv_jax as tc
from transconv_jax._dispatch import FORMS, _apply

METHODS = [*FORMS, "auto"]
CFG = Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1))


def _run_child(code: str, *args: str, xla_flags: str | None = None) -> str:
    env = None if xla_flags is None else {**os.environ, "XLA_FLAGS": xla_flags}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_keeps_dtype_and_accumulates_in_float32(method, dtype):
    y, w = CFG.arrays()
    y16, w16 = jnp.asarray(y, dtype), jnp.asarray(w, dtype)
    out = tc.conv_transpose(y16, w16, **CFG.kwargs, method=method)
    assert out.dtype == dtype
    # The oracle: the same rounded inputs in float32, rounded once at the end.
    ref = torch_conv_transpose(np.asarray(y16, np.float32), np.asarray(w16, np.float32), CFG)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(jnp.asarray(ref, dtype), np.float32))
    wide = tc.conv_transpose(y16, w16, **CFG.kwargs, method=method, preferred_element_type=jnp.float32)
    assert wide.dtype == jnp.float32
    assert_close(wide, ref)


def test_half_precision_gradients_keep_dtype():
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in CFG.arrays())
    gy, gw = jax.grad(lambda y, w: tc.conv_transpose(y, w, **CFG.kwargs).astype(jnp.float32).sum(), (0, 1))(y, w)
    assert gy.dtype == gw.dtype == jnp.bfloat16


def test_float64_matches_torch_float64():
    out = _run_child(
        """
        import sys; sys.path.insert(0, "tests")
        import jax; jax.config.update("jax_enable_x64", True)
        import numpy as np, torch
        from oracle import Config, torch_conv_transpose
        import transconv_jax as tc
        from transconv_jax._dispatch import FORMS
        cfg = Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1))
        y, w = cfg.arrays(dtype=np.float64)
        ref = torch_conv_transpose(y, w, cfg)
        for method in [*FORMS, "auto"]:
            out = tc.conv_transpose(y, w, **cfg.kwargs, method=method)
            assert out.dtype == np.float64, out.dtype
            np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "matmul"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_special_values_reach_exactly_what_they_touch(method, value):
    y, w = CFG.arrays()
    y[1, 2, 2, 3] = value
    y[0, 0, 0, 0] = -value
    out = np.asarray(tc.conv_transpose(y, w, **CFG.kwargs, method=method))
    ref = torch_conv_transpose(y, w, CFG)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    finite = np.isfinite(ref)
    assert_close(out[finite], ref[finite])


def test_dense_matrix_form_spreads_nan():
    """Documented: W.T @ y multiplies every input by a column of W, zeros included, and 0 * NaN = NaN."""
    y, w = CFG.arrays()
    y[1, 2, 2, 3] = np.nan
    out = np.asarray(tc.conv_transpose(y, w, **CFG.kwargs, method="matmul"))
    ref = torch_conv_transpose(y, w, CFG)
    assert np.isnan(out).sum() >= np.isnan(ref).sum() > 0


DEGENERATE = [
    Config(0, 2, 2, 1, (3, 3), (2, 2), (2, 2), (0, 0), (0, 0), (1, 1)),  # empty batch
    Config(1, 1, 1, 1, (1, 1), (1, 1), (1, 1), (0, 0), (0, 0), (1, 1)),  # everything size 1
    Config(1, 2, 3, 1, (2, 1), (5, 4), (1, 1), (0, 1), (0, 0), (1, 1)),  # kernel larger than input
    Config(1, 2, 2, 1, (3, 2), (2, 1), (4, 3), (0, 0), (3, 2), (1, 1)),  # stride > kernel: gaps of zeros
    Config(2, 3, 4, 1, (4,), (1,), (1,), (0,), (0,), (1,)),  # 1x1 kernel
    Config(1, 2, 2, 2, (1, 1, 1), (3, 1, 2), (2, 3, 1), (1, 0, 0), (1, 2, 0), (1, 1, 1)),  # single voxel
]


@pytest.mark.parametrize("cfg", DEGENERATE, ids=str)
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_shapes_match_torch(cfg, method):
    check_against_torch(cfg, method, grads=cfg.batch > 0)


def test_bias_free_gaps_are_exact_zeros():
    cfg = DEGENERATE[3]
    y, w = cfg.arrays()
    for method in METHODS:
        out = np.asarray(tc.conv_transpose(y, w, **cfg.kwargs, method=method))
        ref = torch_conv_transpose(y, w, cfg)
        np.testing.assert_array_equal(out == 0, ref == 0)


def test_repeated_calls_compile_once():
    cfg = Config(1, 4, 3, 2, (7, 11), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1))  # shapes no other test uses
    y, w = (jnp.asarray(a) for a in cfg.arrays())
    before = _apply._cache_size()
    for _ in range(3):
        tc.conv_transpose(y, w, **cfg.kwargs)
        # Equal arguments spelled differently (a list, a fresh array) hit the same compiled program.
        tc.conv_transpose(y + 1, w, None, list(cfg.stride), cfg.padding, cfg.output_padding, groups=cfg.groups)
    assert _apply._cache_size() == before + 1

    traces = []

    @jax.jit
    def f(y, w):
        traces.append(1)
        return tc.conv_transpose(y, w, **cfg.kwargs)

    for _ in range(3):
        f(y, w)
    assert len(traces) == 1


FUZZ_CHILD = """
import sys; sys.path.insert(0, "tests")
import numpy as np, torch
from hypothesis import given, settings, strategies as st
import transconv_jax as tc
from transconv_jax._dispatch import FORMS
from oracle import TORCH_CONV_T, assert_close

counts = {"equal": 0, "both_refused": 0, "empty_refused": 0}

@settings(derandomize=True, deadline=None, database=None, max_examples=int(sys.argv[1]))
@given(st.data())
def fuzz(data):
    nd = data.draw(st.integers(1, 3))
    pick = lambda *values: data.draw(st.sampled_from(values))
    ax = lambda *values: tuple(pick(*values) for _ in range(nd))
    # A valid configuration, then (in about half of the cases) one argument broken.
    groups = pick(1, 1, 2, 3)
    c_in = groups * pick(1, 2)
    w_shape = [c_in, pick(1, 2), *ax(1, 2, 3, 4)]
    y_shape = [pick(1, 2, 0), c_in, *ax(1, 2, 3, 4)]
    stride, dilation = ax(1, 2, 3), ax(1, 1, 2)
    kw = dict(stride=stride, padding=ax(0, 0, 1, 2), dilation=dilation, groups=groups,
              output_padding=tuple(pick(0, max(s, d) - 1) for s, d in zip(stride, dilation)))
    broken = pick(*[None] * 8, "stride", "padding", "output_padding", "dilation", "groups", "channels", "kernel")
    if broken in ("stride", "dilation"):
        kw[broken] = (0,) * nd
    elif broken == "padding":
        kw["padding"] = pick((-1,) * nd, (9,) * nd)
    elif broken == "output_padding":
        kw["output_padding"] = tuple(max(s, d) for s, d in zip(stride, dilation))
    elif broken == "groups":
        kw["groups"] = pick(0, c_in + 1)
    elif broken == "channels":
        w_shape[0] += 1
    elif broken == "kernel":
        w_shape[2] = 0
    method = data.draw(st.sampled_from(sys.argv[2].split(",")))
    rng = np.random.default_rng(0)
    y = rng.standard_normal(y_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    try:
        ref = TORCH_CONV_T[nd](torch.tensor(y), torch.tensor(w), **kw).numpy()
    except (RuntimeError, IndexError, ValueError):  # PyTorch refuses (its exception types vary)
        ref = None
    try:
        out = np.asarray(tc.conv_transpose(y, w, **kw, method=method))
    except (ValueError, TypeError) as e:
        if ref is None:
            counts["both_refused"] += 1
        elif ref.size == 0:
            # Documented differences: we refuse an empty output (PyTorch returns one for some), and we check
            # the arguments of an empty batch (PyTorch skips most checks when the batch is empty).
            counts["empty_refused"] += 1
        else:
            raise AssertionError(f"we refused {kw} {y_shape} {w_shape} ({e}) but PyTorch computed {ref.shape}")
        return
    assert ref is not None, f"PyTorch refused {kw} {y_shape} {w_shape} but we returned {out.shape}"
    assert_close(out, ref)
    counts["equal"] += 1

fuzz()
print(counts)
"""


def test_fuzz_equals_torch_or_refuses_where_torch_refuses():
    out = _run_child(FUZZ_CHILD, "400", ",".join(METHODS), xla_flags=default_codegen_flags())  # a crash guard too
    counts = eval(out.strip().splitlines()[-1])
    print(counts)
    assert counts["equal"] > 50 and counts["both_refused"] > 50
