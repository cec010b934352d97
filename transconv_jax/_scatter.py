"""The scatter form: every input element, times the kernel, is added into a window of the output.

This is the picture that defines the transposed convolution, computed the way PyTorch's CPU
fallback and Caffe's Deconvolution layer compute it: a GEMM, then col2im.

1. GEMM. One contraction over the input channels of each group,
   `(N * spatial, C_in / g) x (C_in / g, taps * C_out / g)`, gives for every input element the
   kernel scaled by that element (the "columns"), split into one `(N, C_out, *spatial)` array
   per kernel tap.
2. col2im. Tap `t` of input element `i` lands at `s * i + d * t` of the full, uncropped output
   (size `(n - 1) s + d (k - 1) + 1`). One `lax.pad` per tap puts it there: `s - 1` zeros between
   elements, `d * t - low` before; a negative edge pad crops (`padding`) and a positive one
   extends (`output_padding`), so the crop costs nothing extra. The taps are summed.

Python loops run over kernel taps only (static), never over pixels or batch; nothing multiplies
an inserted zero, and no `lhs_dilation` is lowered (so XLA:CPU's strided-dilated abort cannot
occur). Autodiff gives the im2col backward: strided slices of the cotangent, concatenated, then
two GEMMs.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ._spec import Spec, transpose_spatial

_SPATIAL = "stu"  # einsum letters of the spatial axes, up to 3-D


def conv_transpose_scatter_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y` as a GEMM (each input element times the kernel) and col2im (one add per tap).

    Args:
        y: `(N, C_in, *spatial)`.
        w: `(C_in, C_out // groups, *kernel)`, PyTorch's ConvTranspose weight layout.
        spec: the canonical `Spec`; `padding` is the crop of the full output (negative `high`
            extends it).

    Returns:
        `(N, C_out, *out_spatial)` with `out_spatial = transpose_spatial(spatial, kernel, spec)`.

    Example:
        >>> import jax.numpy as jnp
        >>> spec = Spec(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
        >>> conv_transpose_scatter_form(jnp.array([[[1.0, 10.0]]]), jnp.array([[[1.0, 2.0, 3.0]]]), spec)
        Array([[[ 1.,  2., 13., 20., 30.]]], dtype=float32)
    """
    kernel = w.shape[2:]
    out_spatial = transpose_spatial(y.shape[2:], kernel, spec)
    columns = _columns(y, w, spec)
    parts = [_place(col, tap, spec, out_spatial) for col, tap in zip(columns, _taps(kernel), strict=True)]
    return sum(parts[1:], parts[0])


def _columns(y: jax.Array, w: jax.Array, spec: Spec) -> list[jax.Array]:
    """The GEMM: one `(N, C_out, *spatial)` array per kernel tap, in row-major tap order.

    One einsum over `C_in / g` with the group as a batch axis, then `lax.split` along the taps
    (not indexing: the transpose of a split is one concatenate, that of an index a pad per tap).
    """
    n, c_in, *spatial = y.shape
    _, c_out_g, *kernel = w.shape
    g, taps = spec.groups, math.prod(kernel)
    s = _SPATIAL[: spec.ndim]
    yg = y.reshape(n, g, c_in // g, *spatial)
    wg = w.reshape(g, c_in // g, c_out_g, taps)
    cols = jnp.einsum(f"ngc{s},gcok->ngok{s}", yg, wg, precision=spec.precision)
    cols = cols.reshape(n, g * c_out_g, taps, *spatial)
    return [c.reshape(n, g * c_out_g, *spatial) for c in lax.split(cols, (1,) * taps, axis=2)]


def _place(col: jax.Array, tap: tuple[int, ...], spec: Spec, out_spatial: tuple[int, ...]) -> jax.Array:
    """Put one tap's columns where they land in the (cropped or extended) output: one `lax.pad`."""
    config = [(0, 0, 0), (0, 0, 0)]
    for t, n, s, d, (lo, _), size in zip(
        tap, col.shape[2:], spec.stride, spec.dilation, spec.padding, out_spatial, strict=True
    ):
        low = d * t - lo
        config.append((low, size - low - (n - 1) * s - 1, s - 1))
    return lax.pad(col, jnp.zeros((), col.dtype), config)


def _taps(kernel: tuple[int, ...]):
    """Every kernel tap, in the row-major order of `w.reshape(..., -1)`."""
    return itertools.product(*(range(k) for k in kernel))
