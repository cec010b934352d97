"""The matrix form: a convolution is a matrix `W`, and the transposed convolution multiplies by `W.T`.

`conv_matrix` builds `W` for one example by index arithmetic: every structural nonzero of `W` is
one kernel tap meeting one input pixel, so its (row, column) and the kernel entry it holds follow
from the output position, the tap and the channels. One scatter puts the kernel values there
(dense), or the same indices and values make a `BCOO` (sparse). The per-axis index arithmetic is
plain numpy on static shapes; the product over axes and channels is built in the traced graph.

A memory guard runs first, on integers only: dense while the matrix fits the budget
(`matrix_budget=`, static), else sparse while that fits, else a `ValueError` naming the sizes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.typing import ArrayLike

from ._conv import accumulate, as_array
from ._shuffle import reshape
from ._spec import Spec, accumulation_dtype, conv_spatial, conv_spec, int_tuple, transpose_spatial, with_matrix_budget

_INDEX_BYTES = 2 * 4  # a sparse entry's (row, column), int32


@overload
def conv_matrix(
    weight: ArrayLike,
    input_shape: Sequence[int],
    stride=...,
    padding=...,
    dilation=...,
    groups: int = ...,
    *,
    sparse: Literal[False] = ...,
    matrix_budget: int | None = ...,
) -> jax.Array: ...


@overload
def conv_matrix(
    weight: ArrayLike,
    input_shape: Sequence[int],
    stride=...,
    padding=...,
    dilation=...,
    groups: int = ...,
    *,
    sparse: Literal[True],
    matrix_budget: int | None = ...,
) -> jsparse.BCOO: ...


def conv_matrix(
    weight: ArrayLike,
    input_shape: Sequence[int],
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    sparse: bool = False,
    matrix_budget: int | None = None,
) -> jax.Array | jsparse.BCOO:
    """The matrix `W` of `conv` for one example: `conv(x)[i].ravel() == W @ x[i].ravel()`.

    Row `(o, *p)` of `W` is output channel `o` at output position `p`; column `(c, *q)` is input
    channel `c` at input position `q`; the entry is `w[o, c % (C_in // groups), *t]` where
    `q = p * stride - padding_low + t * dilation`, for `c` in the group of `o`, else 0. The
    transposed convolution with the same arguments is `W.T`.

    Args:
        weight: conv kernel, `(C_out, C_in // groups, *kernel)` with 1 to 3 spatial axes.
        input_shape: `(C_in, *spatial)`, the shape of one example `x[i]` of the conv input.
        stride: int or one int per spatial axis.
        padding: as for `conv`: PyTorch's ints, `(low, high)` pairs, or 'SAME' / 'VALID'.
        dilation: int or one int per axis.
        groups: number of channel groups.
        sparse: return a `jax.experimental.sparse.BCOO` holding exactly the structural nonzeros.
        matrix_budget: the most bytes the matrix may take (static), None for `DEFAULT_MATRIX_BUDGET`
            (256 MiB); a dense matrix takes `rows * cols * itemsize`, a sparse one `nnz * (itemsize + 8)`.

    Returns:
        `(C_out * prod(out_spatial), C_in * prod(spatial))`, dense or BCOO. Raises `ValueError`
        before allocating if it exceeds `matrix_budget`.

    Example:
        >>> import jax.numpy as jnp
        >>> conv_matrix(jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]]), (1, 3, 3))
        Array([[1., 2., 0., 3., 4., 0., 0., 0., 0.],
               [0., 1., 2., 0., 3., 4., 0., 0., 0.],
               [0., 0., 0., 1., 2., 0., 3., 4., 0.],
               [0., 0., 0., 0., 1., 2., 0., 3., 4.]], dtype=float32)
    """
    w = as_array(weight)
    spec, input_shape = _conv_matrix_spec(w, input_shape, stride, padding, dilation, groups, matrix_budget)
    kind = "sparse" if sparse else "dense"
    _guard(w.shape, input_shape, spec, w.dtype, (kind,), f"conv_matrix(sparse={sparse})")
    return _matrix(w, input_shape, spec, kind)


def conv_transpose_matmul_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y` for the whole batch as one matmul, `W` the matrix of the conv this transposes.

    `w` `(C_in, C_out // groups, *kernel)` read as a conv kernel maps `C_out` channels on the
    transposed output's grid to the `C_in` channels of `y`: `W` is that conv's matrix, with the
    negative high padding of `output_padding` cropping the conv's input. Dense if it fits
    `spec.matrix_budget`, else sparse (`BCOO`), else a `ValueError` at trace time.
    `spec.precision` reaches the dense matmul; the sparse product takes none. The result is in the
    accumulation dtype.

    A NaN or inf in `y` spreads differently here: the dense product sums `0 * y` over every
    structural zero of a column, and `0 * NaN = NaN`, so one NaN in an example makes that whole
    example's output NaN; the sparse product and the other forms touch only its receptive field.
    """
    in_shape = _transposed_grid(y.shape, w.shape, spec)
    kind = _guard(w.shape, in_shape, spec, w.dtype, ("dense", "sparse"), "method='matmul'")
    return transpose_product(y, w, spec, kind)


def transpose_product(y: jax.Array, w: jax.Array, spec: Spec, kind: str) -> jax.Array:
    """`W.T @ y` with `W` built `kind` = 'dense' or 'sparse', unguarded: the form's body (and the benchmark's).

    Sharding. The dense `W` is built per group as `(g, C_in / g, positions, C_out / g,
    out_positions)` by a scatter indexed on the positions only (`_grouped_matrix`), and the
    product keeps the channel axes apart: GSPMD then carries a batch-sharded `y` and a kernel
    sharded on its output channels (axis 1) through to the result's batch and channel axes. (A
    scatter into the flat `(rows, cols)` matrix, indexed by channel too, lost the channel
    sharding.) A `y` sharded on a spatial axis is the documented exception: every output position
    reads the whole input grid of its example, so each device computes its slice's share of the
    whole output and an all-reduce sums them; the result is replicated (the other forms keep the
    axis). The sparse `BCOO` product, indexed by channel, keeps batch sharding only.
    """
    in_shape = _transposed_grid(y.shape, w.shape, spec)
    acc = accumulation_dtype(y.dtype, spec.preferred_element_type)
    if kind == "dense":
        g, n = spec.groups, y.shape[0]
        yg = reshape(y, (n, g, y.shape[1] // g, math.prod(y.shape[2:])), (0, 1, None, 2))
        product = functools.partial(_dense_product, precision=spec.precision)
        out = accumulate(product, yg, _grouped_matrix(w, in_shape, spec), acc)  # (N, g, C_out / g, out_positions)
        return reshape(out, (n, *in_shape), (0, 1, 3, *(None,) * (len(in_shape) - 2)))
    flat = reshape(y, (y.shape[0], math.prod(y.shape[1:])), (0, 1))
    rows, cols, _, _ = matrix_sizes(w.shape, in_shape, spec, w.dtype)
    tap = _entries(w.shape, in_shape, spec)[2]
    product = functools.partial(_sparse_product, entries=(w.shape, in_shape, spec), shape=(rows, cols))
    out = accumulate(product, flat, _taps(w.reshape(-1), tap), acc)
    return reshape(out, (y.shape[0], *in_shape), (0, 1, *(None,) * (len(in_shape) - 1)))


def _dense_product(yg, mat, acc, *, precision):
    """`(N, g, C_in / g, positions) x (g, C_in / g, positions, C_out / g, out_positions)`, per group.

    With one group there is no group axis in the product: XLA:CPU then runs it as one GEMM on
    `W` as built, where a size-1 batch axis made it copy `W` into a transposed layout first.
    """
    n, g, c, p = yg.shape
    if g == 1:
        out = jnp.einsum(
            "ncp,cpk->nk", yg[:, 0], mat[0].reshape(c, p, -1), precision=precision, preferred_element_type=acc
        )
        return reshape(out, (n, 1, *mat.shape[3:]), (0, None, 1, None))
    return jnp.einsum("ngcp,gcpox->ngox", yg, mat, precision=precision, preferred_element_type=acc)


def _grouped_matrix(w: jax.Array, input_shape, spec: Spec) -> jax.Array:
    """The dense `W` per group, `(g, C_in / g, prod(spatial), C_out / g, prod(out_spatial))`.

    One scatter of the kernel's taps into zeros, as `_matrix` does, but indexed on the two position
    axes only: the channel axes pass through the gather of the taps and the scatter, so that GSPMD
    keeps the kernel's channel sharding (a flat matrix indexed by channel too lost it).
    """
    c_in, c_out_g, *kernel = w.shape
    g = spec.groups
    pairs = [_axis_taps(*a) for a in _axes(input_shape, kernel, spec)]  # per axis (y position, tap, output position)
    spatial, out_spatial = conv_spatial(input_shape[1:], kernel, spec), input_shape[1:]
    pos = _broadcast_sum([p * _stride(spatial, i) for i, (p, _, _) in enumerate(pairs)])
    tap = _broadcast_sum([t * _stride(kernel, i) for i, (_, t, _) in enumerate(pairs)])
    out = _broadcast_sum([q * _stride(out_spatial, i) for i, (_, _, q) in enumerate(pairs)])
    values = jnp.moveaxis(_taps(w.reshape(g, c_in // g, c_out_g, -1), tap), -1, 0)  # (pairs, g, C_in / g, C_out / g)
    shape = (g, c_in // g, math.prod(spatial), c_out_g, math.prod(out_spatial))
    return jnp.zeros(shape, w.dtype).at[:, :, pos, :, out].set(values, unique_indices=True)


def _taps(w: jax.Array, tap) -> jax.Array:
    """`w[..., tap]`, each kernel entry once per matrix entry it fills; its transpose sums them in float32.

    The kernel gradient is that transpose: a sum, per tap, of the matrix cotangent over every
    position the tap fills (hundreds of terms). Gathering from a float32 copy of the kernel (exact:
    the values are the kernel's) makes that sum float32, rounded to the kernel's dtype once; summed
    in bfloat16 it was several times less accurate than the other forms' (BENCHMARKS.md, GPU).
    The matrix and its product keep the kernel's dtype.
    """
    wide = w.dtype if jnp.finfo(w.dtype).bits >= 32 else jnp.float32
    return w.astype(wide)[..., tap].astype(w.dtype)


def _sparse_product(flat, values, acc, *, entries, shape):
    """`flat @ W` with `W` the BCOO of `values` at the structural nonzeros of `entries`.

    The indices are computed here, in each product's own trace, from the static `entries`: held by
    the product (a non-differentiable argument of `accumulate`'s custom_jvp) they were a traced
    value, and every jitted bf16 fwd+bwd failed to lower.
    """
    row, col, _ = _entries(*entries)
    mat = jsparse.BCOO((values, jnp.stack([row, col], axis=1)), shape=shape, unique_indices=True)
    return jsparse.bcoo_dot_general(flat, mat, dimension_numbers=(((1,), (0,)), ((), ())), preferred_element_type=acc)


def _transposed_grid(y_shape, w_shape, spec: Spec) -> tuple[int, ...]:
    """`(C_out, *out_spatial)` of the transposed conv: the one-example input of the conv it transposes."""
    return (w_shape[1] * spec.groups, *transpose_spatial(y_shape[2:], w_shape[2:], spec))


# ------------------------------------------------------------------------------ the guard


def matrix_sizes(w_shape, input_shape, spec: Spec, dtype) -> tuple[int, int, int, int]:
    """`(rows, cols, dense_bytes, sparse_bytes)` of the conv matrix, from integers only."""
    c_out, c_in_g, *kernel = w_shape
    out_spatial = conv_spatial(input_shape[1:], kernel, spec)
    rows, cols = c_out * math.prod(out_spatial), math.prod(input_shape)
    nnz = c_out * c_in_g * math.prod(_axis_count(*a) for a in _axes(input_shape, kernel, spec))
    itemsize = np.dtype(dtype).itemsize
    return rows, cols, rows * cols * itemsize, nnz * (itemsize + _INDEX_BYTES)


def _guard(w_shape, input_shape, spec, dtype, kinds, who) -> str:
    """The first of `kinds` whose matrix fits the budget, or a ValueError that names the sizes."""
    rows, cols, dense, sparse = matrix_sizes(w_shape, input_shape, spec, dtype)
    size = {"dense": dense, "sparse": sparse}
    if max(rows, cols) < 2**31:
        for kind in kinds:
            if size[kind] <= spec.matrix_budget:
                return kind
    limit = f"matrix_budget={spec.matrix_budget} ({_mib(spec.matrix_budget)})"
    limit += " or the int32 index range" if max(rows, cols) >= 2**31 else ""
    alternative = "" if "sparse" in kinds else " or pass sparse=True"
    raise ValueError(
        f"{who}: the conv matrix is {rows} x {cols}: {_mib(dense)} dense, {_mib(sparse)} sparse (BCOO), over "
        f"{limit}. Use method='vjp' (or 'scatter' / 'subpixel'), which never builds the matrix, or raise the budget "
        f"with matrix_budget=nbytes{alternative}."
    )


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.6g} MiB"


def _axes(input_shape, kernel, spec):
    """Per spatial axis: `(n_in, n_out, k, stride, dilation, low padding)`."""
    out_spatial = conv_spatial(input_shape[1:], kernel, spec)
    return zip(
        input_shape[1:], out_spatial, kernel, spec.stride, spec.dilation, (lo for lo, _ in spec.padding), strict=True
    )


def _axis_count(n_in, n_out, k, s, d, lo) -> int:
    """How many (output position, tap) pairs of one axis land inside the input, in O(k)."""
    first = (-(lo - np.arange(k) * d) // s) * -1  # ceil((lo - t d) / s): the first p with q >= 0
    last = (n_in - 1 + lo - np.arange(k) * d) // s  # the last p with q <= n_in - 1
    return int(np.maximum(np.minimum(last, n_out - 1) - np.maximum(first, 0) + 1, 0).sum())


def _axis_taps(n_in, n_out, k, s, d, lo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (output position, tap, input position) of every pair of one axis inside the input."""
    p, t = np.meshgrid(np.arange(n_out), np.arange(k), indexing="ij")
    q = p * s - lo + t * d
    inside = (q >= 0) & (q < n_in)
    return p[inside], t[inside], q[inside]


# ----------------------------------------------------------------------------- the matrix


def _entries(w_shape, input_shape, spec: Spec) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row, column and flat kernel index of every structural nonzero, as flat int32 arrays.

    The axes are (C_out, C_in // groups, pairs of axis 1, ..., pairs of axis D); each index is
    a sum of per-axis terms, broadcast over the others.
    """
    c_out, c_in_g, *kernel = w_shape
    out_spatial = conv_spatial(input_shape[1:], kernel, spec)
    o, c = np.arange(c_out), np.arange(c_in_g)
    group_col = (o // (c_out // spec.groups)) * c_in_g
    q_in, q_out, q_k = math.prod(input_shape[1:]), math.prod(out_spatial), math.prod(kernel)
    terms = [(o * q_out, group_col * q_in, o * c_in_g * q_k), (0 * c, c * q_in, c * q_k)]
    for axis, (p, t, q) in enumerate(_axis_taps(*a) for a in _axes(input_shape, kernel, spec)):
        terms.append((p * _stride(out_spatial, axis), q * _stride(input_shape[1:], axis), t * _stride(kernel, axis)))
    return tuple(_broadcast_sum([term[i] for term in terms]) for i in range(3))


def _stride(shape, axis) -> int:
    """The C-order stride of `axis` in an array of `shape`."""
    return math.prod(shape[axis + 1 :])


def _broadcast_sum(parts) -> jax.Array:
    """Sum 1-D arrays, the i-th along axis i of an outer product, flattened (int32).

    In `jax.numpy`: under a trace the program computes the indices from small constants. (As NumPy
    they were whole constants of the program, which XLA spent seconds constant-folding gathers of.)
    """
    total = jnp.zeros((1,) * len(parts), jnp.int32)
    for i, part in enumerate(parts):
        shape = [1] * len(parts)
        shape[i] = len(part)
        total = total + jnp.asarray(part, jnp.int32).reshape(shape)
    return total.reshape(-1)


def _matrix(w: jax.Array, input_shape, spec: Spec, kind: str) -> jax.Array | jsparse.BCOO:
    """The conv matrix, dense (one scatter of the kernel values) or BCOO; grads flow to `w`."""
    rows, cols, _, _ = matrix_sizes(w.shape, input_shape, spec, w.dtype)
    row, col, tap = _entries(w.shape, input_shape, spec)
    values = w.reshape(-1)[tap]
    if kind == "sparse":
        return jsparse.BCOO((values, jnp.stack([row, col], axis=1)), shape=(rows, cols), unique_indices=True)
    return jnp.zeros((rows, cols), w.dtype).at[row, col].set(values, unique_indices=True)


def _conv_matrix_spec(w, input_shape, stride, padding, dilation, groups, budget) -> tuple[Spec, tuple[int, ...]]:
    """Check `conv_matrix`'s arguments with `conv`'s own checks, on a one-example input."""
    input_shape = int_tuple("input_shape", input_shape, None, minimum=1)
    if not 2 <= len(input_shape) <= 4 or len(input_shape) + 1 != getattr(w, "ndim", -1):
        raise ValueError(
            f"input_shape={input_shape} must be (C_in, *spatial) with 1 to 3 spatial axes, one per kernel axis of "
            f"w (shape {tuple(getattr(w, 'shape', ()))}, i.e. (C_out, C_in // groups, *kernel)): no batch axis."
        )
    x = jax.ShapeDtypeStruct((1, *input_shape), w.dtype)
    spec, _ = conv_spec(x, w, None, stride, padding, dilation, groups, None, None)
    return with_matrix_budget(spec, budget), input_shape
