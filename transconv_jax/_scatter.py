"""The scatter form: every input element, times the kernel, is added into a window of the output.

This is the picture that defines the transposed convolution, computed the way PyTorch's CPU
fallback and Caffe's Deconvolution layer compute it: a GEMM, then col2im.

1. GEMM. One contraction over the input channels of each group,
   `(N * spatial, C_in / g) x (C_in / g, taps * C_out / g)`, gives for every input element the
   kernel scaled by that element (the "columns"), split into one `(C_out, N, *spatial)` array
   per kernel tap (channels first, as the GEMM writes them).
2. col2im. Tap `t` of input element `i` lands at `s * i + d * t` of the full, uncropped output,
   i.e. at row `s * i + d * t - lo` of the cropped one (`lo` the low `padding`). Write
   `d * t - lo = q * s + r`: the tap fills every `s`-th output row from `s * q + r`, i.e. rows
   `i + q` of output phase `r` (the output seen as `(blocks, s)`, `blocks = ceil(out / s)`). So
   each tap is one contiguous `lax.pad` (negative where the crop cuts it) into the `blocks`-long
   array of its phase, the taps of a phase are summed, and the phases are interleaved (a stack,
   a transpose and a reshape); only rows past the end, when `s` does not divide the output, are
   cut after it. The adds run over the phase arrays, `1 / s` of the output per axis: never over
   the zeros that a stride would insert between input elements.

   Sharding. The phases are laid out on the cropped output's grid, so that an output sharded
   evenly on a spatial axis is `blocks` rows sharded evenly (when the shard count divides
   `blocks`) with the phase axis minor: GSPMD then partitions the pads (halo exchange), the
   stack and the interleave's reshape without gathering. Phases of the uncropped grid (one row
   more per axis, cropped after the interleave) made GSPMD all-gather the whole output.

Python loops run over kernel taps only (static), never over pixels or batch; nothing multiplies
an inserted zero, and no `lhs_dilation` is lowered (so XLA:CPU's strided-dilated abort cannot
occur). Autodiff gives the im2col backward: the cotangent split into phases, one contiguous
slice per tap, concatenated, then two GEMMs.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ._conv import accumulate, pad_spatial
from ._shuffle import interleave
from ._spec import Spec, accumulation_dtype, transpose_spatial

_SPATIAL = "stu"  # einsum letters of the spatial axes, up to 3-D


def conv_transpose_scatter_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y` as a GEMM (each input element times the kernel) and col2im (one add per tap).

    Args:
        y: `(N, C_in, *spatial)`.
        w: `(C_in, C_out // groups, *kernel)`, PyTorch's ConvTranspose weight layout.
        spec: the canonical `Spec`; `padding` is the crop of the full output (negative `high`
            extends it).

    Returns:
        `(N, C_out, *out_spatial)` with `out_spatial = transpose_spatial(spatial, kernel, spec)`, in the
        accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> spec = Spec(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
        >>> conv_transpose_scatter_form(jnp.array([[[1.0, 10.0]]]), jnp.array([[[1.0, 2.0, 3.0]]]), spec)
        Array([[[ 1.,  2., 13., 20., 30.]]], dtype=float32)
    """
    kernel = w.shape[2:]
    out_spatial = transpose_spatial(y.shape[2:], kernel, spec)
    blocks = tuple(-(-t // s) for t, s in zip(out_spatial, spec.stride, strict=True))
    cols = _columns(y, w, spec)
    phases = {}
    for col, tap in zip(cols, _taps(kernel), strict=True):
        placed = _place(col, tap, spec, blocks)
        if placed is not None:
            phase, part = placed
            phases[phase] = phases[phase] + part if phase in phases else part
    zeros = jnp.zeros((w.shape[1] * spec.groups, y.shape[0], *blocks), cols[0].dtype)
    return _interleave(phases, zeros, spec, out_spatial)


def _einsum(subscripts: str, a, b, acc, *, precision):
    return jnp.einsum(subscripts, a, b, precision=precision, preferred_element_type=acc)


def _columns(y: jax.Array, w: jax.Array, spec: Spec) -> list[jax.Array]:
    """The GEMM: one `(C_out, N, *spatial)` array per kernel tap, in row-major tap order.

    One einsum over `C_in / g` with the group as a batch axis, in the order the matrix product
    writes it (channels first: moving `N` to the front is left to the interleave's transpose,
    which moves the smaller output), then `lax.split` along the taps (not indexing: the
    transpose of a split is one concatenate, that of an index a pad per tap).
    """
    n, c_in, *spatial = y.shape
    _, c_out_g, *kernel = w.shape
    g, taps = spec.groups, math.prod(kernel)
    s = _SPATIAL[: spec.ndim]
    yg = y.reshape(n, g, c_in // g, *spatial)
    wg = w.reshape(g, c_in // g, c_out_g, taps)
    product = functools.partial(_einsum, f"gcok,ngc{s}->gokn{s}", precision=spec.precision)
    cols = accumulate(product, wg, yg, accumulation_dtype(y.dtype, spec.preferred_element_type))
    cols = cols.reshape(g * c_out_g, taps, n, *spatial)
    return [c.reshape(g * c_out_g, n, *spatial) for c in lax.split(cols, (1,) * taps, axis=1)]


def _place(col: jax.Array, tap: tuple[int, ...], spec: Spec, blocks: tuple[int, ...]):
    """The output phase `r` that one tap's columns land in and the columns padded (or cropped) into it;
    None if the crop (`padding`) removes all of them."""
    offsets = [
        divmod(d * t - lo, s) for t, s, d, (lo, _) in zip(tap, spec.stride, spec.dilation, spec.padding, strict=True)
    ]
    if any(q >= b or q + n <= 0 for (q, _), b, n in zip(offsets, blocks, col.shape[2:], strict=True)):
        return None
    pads = [(q, b - q - n) for (q, _), b, n in zip(offsets, blocks, col.shape[2:], strict=True)]
    return tuple(r for _, r in offsets), pad_spatial(col, pads)


def _interleave(phases: dict, zeros: jax.Array, spec: Spec, out_spatial: tuple[int, ...]) -> jax.Array:
    """Row `q * s + r` of the output is row `q` of phase `r`, and `(C, N)` becomes `(N, C)`; then the
    rows past the output (when `s` does not divide it) are cut. `zeros` fill the phases no tap reaches."""
    stacked = jnp.stack([phases.get(r, zeros) for r in _taps(spec.stride)], axis=-1)
    full = interleave(stacked, "CN" + "X" * spec.ndim + "P", spec.stride)
    return pad_spatial(full, [(0, n - size) for size, n in zip(full.shape[2:], out_spatial, strict=True)])


def _taps(shape: tuple[int, ...]):
    """Every index of `shape` in row-major order: the kernel taps of `w.reshape(..., -1)`, or the phases."""
    return itertools.product(*(range(k) for k in shape))
