"""The matrix form: conv_matrix is conv's Jacobian, W.T @ y is PyTorch's conv_transpose, the memory guard."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from hypothesis import given, settings
from oracle import HYPOTHESIS, Config, assert_close, check_against_torch, configs, torch_conv_transpose

import transconv_jax as tc
from transconv_jax import _matmul
from transconv_jax._spec import transpose_spatial

# conv cases: w shape (C_out, C_in // g, *k), input_shape (C_in, *spatial), stride, padding, dilation, groups
CONV_CASES = [
    ((1, 1, 2, 2), (1, 3, 3), 1, 0, 1, 1),  # the tutorial's kernel2matrix
    ((3, 2, 3), (2, 7), 2, 1, 1, 1),
    ((2, 3, 2), (3, 6), 1, ((2, 0),), 2, 1),
    ((4, 1, 3, 2), (2, 5, 4), (2, 1), (1, 0), (1, 2), 2),
    ((6, 1, 3, 3), (6, 4, 4), 1, "SAME", 1, 6),  # depthwise
    ((2, 2, 2, 3), (2, 5, 6), (3, 2), "VALID", (2, 1), 1),
    ((4, 1, 2, 2, 2), (2, 3, 4, 3), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (2, 1, 1), 2),
    ((2, 3, 3, 1, 2), (3, 4, 3, 4), 2, 1, 1, 1),
]


def _conv_case(case, seed=0):
    w_shape, input_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, w_shape).astype(np.float32) * rng.choice([-1, 1], w_shape).astype(np.float32)
    x = rng.standard_normal((2, *input_shape)).astype(np.float32)
    return w, x, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _jacobian(w, input_shape, kw):
    f = lambda v: tc.conv(v.reshape(1, *input_shape), w, **kw).reshape(-1)  # noqa: E731
    return jax.jit(jax.jacobian(f))(jnp.zeros(int(np.prod(input_shape)), jnp.float32))


# ------------------------------------------------------------------------- conv_matrix


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_matrix_is_the_jacobian_of_conv(case):
    w, x, kw = _conv_case(case)
    mat = jax.jit(lambda w: tc.conv_matrix(w, case[1], **kw))(w)
    np.testing.assert_array_equal(mat, _jacobian(w, case[1], kw))


@settings(HYPOTHESIS, max_examples=8)
@given(configs())
def test_conv_matrix_is_the_jacobian_random(cfg):
    _, w = cfg.arrays(3)  # read as a conv kernel: (C_out = c_in, C_in // g = c_out_per_group, *k)
    input_shape = (cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups)
    dense = tc.conv_matrix(w, input_shape, **kw)
    np.testing.assert_array_equal(dense, _jacobian(w, input_shape, kw))
    sp = tc.conv_matrix(w, input_shape, **kw, sparse=True)
    np.testing.assert_array_equal(sp.todense(), dense)
    spec, _ = _matmul._conv_matrix_spec(jnp.asarray(w), input_shape, *kw.values(), None)
    assert _matmul.matrix_sizes(w.shape, input_shape, spec, np.float32)[3] == sp.nse * (4 + 8)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_sparse_holds_exactly_the_structural_nonzeros(case):
    w, x, kw = _conv_case(case)  # no kernel entry is zero, so structural nonzeros are the nonzeros
    dense = tc.conv_matrix(w, case[1], **kw)
    sp = jax.jit(lambda w: tc.conv_matrix(w, case[1], **kw, sparse=True))(w)
    np.testing.assert_array_equal(sp.todense(), dense)
    assert sp.nse == int(np.count_nonzero(dense))
    assert len({tuple(i) for i in np.asarray(sp.indices)}) == sp.nse
    spec, _ = _matmul._conv_matrix_spec(
        jnp.asarray(w), case[1], kw["stride"], kw["padding"], kw["dilation"], kw["groups"], None
    )
    assert _matmul.matrix_sizes(w.shape, case[1], spec, np.float32)[3] == sp.nse * (4 + 8)  # the guard's count


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("sparse", [False, True])
def test_matrix_times_x_is_conv(case, sparse):
    w, x, kw = _conv_case(case, seed=1)
    mat = tc.conv_matrix(w, case[1], **kw, sparse=sparse)
    ref = tc.conv(x, w, **kw)
    out = (mat @ jnp.asarray(x.reshape(2, -1).T)).T.reshape(ref.shape)
    assert_close(out, ref)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_matrix_transpose_is_the_vjp_of_conv(case):
    """W.T @ y is the adjoint of conv, computed by jax.vjp."""
    w, x, kw = _conv_case(case, seed=2)
    mat = tc.conv_matrix(w, case[1], **kw)
    out_shape = tc.conv(x, w, **kw).shape
    y = np.random.default_rng(3).standard_normal(out_shape).astype(np.float32)
    _, vjp = jax.vjp(lambda z: tc.conv(z, w, **kw), jnp.zeros_like(x))
    assert_close((mat.T @ y.reshape(2, -1).T).T.reshape(x.shape), vjp(jnp.asarray(y))[0])


def test_conv_matrix_gradient():
    w, x, kw = _conv_case(CONV_CASES[3])
    jax.test_util.check_grads(lambda w: tc.conv_matrix(w, CONV_CASES[3][1], **kw).sum(axis=0), (w,), 1, modes=("rev",))
    f = lambda w: tc.conv_matrix(w, CONV_CASES[3][1], **kw, sparse=True) @ jnp.ones(40, jnp.float32)  # noqa: E731
    jax.test_util.check_grads(f, (w,), 1, modes=("rev",))


@pytest.mark.parametrize(
    "args, match",
    [
        (((1, 1, 2, 2), (1, 1, 3, 3)), r"input_shape=\(1, 1, 3, 3\) must be \(C_in, \*spatial\).*no batch axis"),
        (((1, 1, 2, 2), (1, 3)), r"input_shape=\(1, 3\) must be \(C_in, \*spatial\)"),
        (((1, 1, 2), (1, -3)), r"input_shape=\(1, -3\): every entry must be >= 1"),
        (((2, 1, 2), (3, 5)), r"input has 3 channels but weight has shape \(2, 1, 2\)"),
        (((1, 1, 4), (1, 2)), r"the convolution output would have spatial shape \(-1,\)"),
    ],
)
def test_conv_matrix_argument_errors(args, match):
    w_shape, input_shape = args
    with pytest.raises(ValueError, match=match):
        tc.conv_matrix(jnp.ones(w_shape), input_shape)


# ------------------------------------------------------------------ method="matmul"

GRID = [
    Config(1, 1, 1, 1, (2, 2), (2, 2), (1, 1), (0, 0), (0, 0), (1, 1)),
    Config(2, 3, 2, 1, (5,), (3,), (2,), (1,), (1,), (1,)),
    Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)),
    Config(1, 6, 1, 6, (3, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # depthwise
    Config(1, 1, 1, 1, (2, 3), (4, 2), (3, 2), (1, 1), (0, 0), (2, 1)),  # strided and dilated
    Config(1, 1, 1, 1, (3,), (2,), (1,), (0,), (1,), (3,)),  # output_padding >= stride (< dilation)
    Config(1, 2, 2, 2, (2, 3, 2), (2, 3, 2), (2, 1, 3), (0, 1, 1), (1, 0, 2), (1, 2, 1)),
    Config(0, 2, 1, 1, (3, 3), (2, 2), (2, 2), (0, 0), (1, 1), (1, 1)),  # empty batch
]


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_matmul_grid_matches_torch(cfg):
    check_against_torch(cfg, "matmul", grads=cfg.batch > 0)


@HYPOTHESIS
@given(configs())
def test_matmul_random_configs_match_torch(cfg):
    check_against_torch(cfg, "matmul")


@settings(HYPOTHESIS, max_examples=8)
@given(configs(max_size=4))
def test_matmul_sparse_random_configs_match_torch(cfg):
    rows, cols, dense, sparse = _sizes(cfg)
    # dense does not fit (unless it is the smaller), sparse does
    assert _kind(cfg, sparse) == ("dense" if dense <= sparse else "sparse")
    check_against_torch(cfg, "matmul", matrix_budget=sparse)


def test_matmul_sparse_in_bf16_compiles_forward_and_backward():
    """bf16 operands go through `accumulate`'s custom_jvp, whose non-differentiable product holds the
    sparse matrix's indices; computed with jax.numpy under the trace they were a traced value, and
    every jitted bf16 fwd+bwd of the sparse form failed to lower ('No constant handler'; the GPU
    bench's grouped layer). Values and gradients against PyTorch on the bf16-rounded inputs."""
    cfg = GRID[2]
    budget = _sizes(cfg)[3]
    assert _kind(cfg, budget) == "sparse"
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in cfg.arrays(3))
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="matmul", matrix_budget=budget)  # noqa: E731

    @jax.jit
    def fwd_bwd(y, w, cot):
        out, vjp = jax.vjp(f, y, w)
        return out, *vjp(cot)

    cot = np.random.default_rng(4).standard_normal((cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial()))
    cot = jnp.asarray(cot, jnp.bfloat16)
    as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    expected = torch_conv_transpose(as32(y), as32(w), cfg, as32(cot))
    for a, b in zip(fwd_bwd(y, w, cot), expected, strict=True):
        assert a.dtype == jnp.bfloat16
        assert_close(as32(a), b, rtol=2**-6)


def test_matmul_equals_vjp_form_with_nhwc_layout():
    cfg = GRID[2]
    y, w = cfg.arrays(4)
    dn = ("NHWC", "HWIO", "NHWC")
    y, w = y.transpose(0, 2, 3, 1), w.transpose(2, 3, 0, 1)
    a = tc.conv_transpose(y, w, **cfg.kwargs, method="matmul", dimension_numbers=dn)
    b = tc.conv_transpose(y, w, **cfg.kwargs, method="vjp", dimension_numbers=dn)
    assert_close(a, b)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_nan_spreads_over_the_example_only_in_the_dense_form(kind):
    cfg = GRID[1]
    y, w = cfg.arrays(5)
    y[0, 0, 0] = np.nan
    budget = _sizes(cfg)[2 if kind == "dense" else 3]
    assert _kind(cfg, budget) == kind
    out = np.asarray(tc.conv_transpose(y, w, **cfg.kwargs, method="matmul", matrix_budget=budget))
    ref = np.asarray(tc.conv_transpose(y, w, **cfg.kwargs, method="vjp"))
    np.testing.assert_array_equal(np.isnan(out[0]), np.ones_like(out[0], bool) if kind == "dense" else np.isnan(ref[0]))
    assert not np.isnan(out[1]).any()


# ----------------------------------------------------------------------------- the guard


def _sizes(cfg):
    spec = cfg.spec()
    in_shape = (cfg.c_out_per_group * cfg.groups, *transpose_spatial(cfg.spatial, cfg.kernel, spec))
    return _matmul.matrix_sizes(cfg.w_shape, in_shape, spec, np.float32)


def _kind(cfg, budget=None):
    """Which matrix method='matmul' builds for `cfg` within `budget`, read from its jaxpr."""
    y, w = cfg.arrays()
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="matmul", matrix_budget=budget)  # noqa: E731
    jaxpr = str(jax.make_jaxpr(f)(y, w))
    return "sparse" if "bcoo_dot_general" in jaxpr else "dense"


def test_guard_goes_dense_then_sparse_then_refuses():
    cfg = Config(2, 3, 2, 1, (6, 5), (3, 3), (2, 2), (1, 1), (1, 0), (1, 1))
    rows, cols, dense, sparse = _sizes(cfg)
    assert sparse < dense
    assert _kind(cfg) == "dense"
    assert _kind(cfg, dense - 1) == "sparse"
    check_against_torch(cfg, "matmul", matrix_budget=dense - 1)
    assert _kind(cfg, sparse) == "sparse"
    with pytest.raises(
        ValueError, match=rf"method='matmul': the conv matrix is {rows} x {cols}.*over matrix_budget={sparse - 1}"
    ):
        tc.conv_transpose(*cfg.arrays(), **cfg.kwargs, method="matmul", matrix_budget=sparse - 1)


def test_guard_refuses_an_oversized_case_fast():
    y = jax.ShapeDtypeStruct((8, 64, 1024, 1024), jnp.float32)
    w = jax.ShapeDtypeStruct((64, 32, 4, 4), jnp.float32)
    with pytest.raises(ValueError) as err:  # before anything is allocated: eval_shape would not allocate anyway
        jax.eval_shape(lambda y, w: tc.conv_transpose(y, w, stride=2, padding=1, method="matmul"), y, w)
    msg = str(err.value)
    rows, cols = 64 * 1024 * 1024, 32 * 2048 * 2048
    assert f"the conv matrix is {rows} x {cols}" in msg
    pairs = 4 * 1024 - 2  # per axis: every (p, t) but p = 0, t = 0 and p = 1023, t = 3 lands in 0..2047
    nnz = 64 * 32 * pairs**2
    assert f"{rows * cols * 4 / 2**20:.6g} MiB dense, {nnz * (4 + 8) / 2**20:.6g} MiB sparse" in msg
    assert f"over matrix_budget={256 * 2**20} (256 MiB). Use method='vjp'" in msg
    assert msg.endswith("with matrix_budget=nbytes.")


def test_guard_refuses_past_the_int32_index_range():
    # the sparse matrix (24 GiB) would fit the budget; its row and column indices would not fit int32
    y = jax.ShapeDtypeStruct((1, 1, 2**16, 2**15), jnp.float32)
    w = jax.ShapeDtypeStruct((1, 1, 1, 1), jnp.float32)
    with pytest.raises(ValueError, match=r"matrix is 2147483648 x 2147483648: .* or the int32 index range\. Use"):
        jax.eval_shape(lambda y, w: tc.conv_transpose(y, w, method="matmul", matrix_budget=2**62), y, w)


def test_conv_matrix_guard_suggests_sparse():
    w = jnp.ones((4, 4, 3, 3))
    with pytest.raises(ValueError, match=r"conv_matrix\(sparse=False\): the conv matrix is .* or pass sparse=True\."):
        tc.conv_matrix(w, (4, 512, 512), padding=1)
    sp = tc.conv_matrix(w, (4, 64, 64), padding=1, sparse=True)
    assert sp.nse == 16 * 62**2 * 9 + 16 * 4 * 62 * 6 + 16 * 4 * 4
    with pytest.raises(ValueError, match=r"conv_matrix\(sparse=True\): .* \(0.000976562 MiB\)\. Use"):
        tc.conv_matrix(w, (4, 8, 8), sparse=True, matrix_budget=2**10)


def test_matrix_budget_is_a_static_keyword_without_global_state():
    cfg = GRID[1]
    assert _kind(cfg, _sizes(cfg)[3]) == "sparse" and _kind(cfg) == "dense"  # one call does not change the next


@pytest.mark.parametrize(
    "nbytes, match",
    [(-1, r"matrix_budget=-1 must be a number of bytes >= 0"), (1.5, r"matrix_budget=1.5 must be a number of bytes")],
)
def test_matrix_budget_is_checked(nbytes, match):
    with pytest.raises(ValueError, match=match):
        tc.conv_transpose(*GRID[1].arrays(), **GRID[1].kwargs, method="matmul", matrix_budget=nbytes)
