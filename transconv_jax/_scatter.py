"""The scatter form: every input element, times the kernel, is added into a window of the output.

This is the picture that defines the transposed convolution, computed the way PyTorch's CPU
fallback and Caffe's Deconvolution layer compute it: a GEMM, then col2im.

1. GEMM. One contraction over the input channels of each group,
   `(N * spatial, C_in / g) x (C_in / g, taps * C_out / g)`, gives for every input element the
   kernel scaled by that element (the "columns"), split into one `(C_out, N, *spatial)` array
   per kernel tap (channels first, as the GEMM writes them).
2. col2im. Tap `t` of input element `i` lands at `s * i + d * t` of the full, uncropped output
   (size `(n - 1) s + d (k - 1) + 1`). Write `d * t = q * s + r`: the tap fills every `s`-th row
   from `s * q + r`, i.e. rows `q .. q + n - 1` of output phase `r` (the output seen as
   `(blocks, s)`). So each tap is one contiguous `lax.pad` into the `blocks`-long array of its
   phase, the taps of a phase are summed, and the phases are interleaved (a stack, a transpose
   and a reshape) and cropped (`padding`; output_padding makes `blocks` longer). The adds run
   over the phase arrays, `1 / s` of the output per axis: never over the zeros that a stride
   would insert between input elements.

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
from ._spec import Spec, accumulation_dtype, dilated_kernel, transpose_spatial

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
    blocks = _blocks(y.shape[2:], kernel, spec)
    phases = {}
    for col, tap in zip(_columns(y, w, spec), _taps(kernel), strict=True):
        phase, part = _place(col, tap, spec, blocks)
        phases[phase] = phases[phase] + part if phase in phases else part
    return _interleave(phases, spec, out_spatial)


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


def _blocks(spatial, kernel, spec: Spec) -> tuple[int, ...]:
    """Rows per output phase, `ceil(extent / s)`: the full output, extended by any negative `high`."""
    return tuple(
        -(-((n - 1) * s + dk + max(-hi, 0)) // s)
        for n, dk, s, (_, hi) in zip(
            spatial, dilated_kernel(kernel, spec.dilation), spec.stride, spec.padding, strict=True
        )
    )


def _place(col: jax.Array, tap: tuple[int, ...], spec: Spec, blocks: tuple[int, ...]):
    """The output phase `r` that one tap's columns land in, and the columns padded into it."""
    offsets = [divmod(d * t, s) for t, s, d in zip(tap, spec.stride, spec.dilation, strict=True)]
    pads = [(q, b - q - n) for (q, _), b, n in zip(offsets, blocks, col.shape[2:], strict=True)]
    return tuple(r for _, r in offsets), pad_spatial(col, pads)


def _interleave(phases: dict, spec: Spec, out_spatial: tuple[int, ...]) -> jax.Array:
    """Row `q * s + r` of the output is row `q` of phase `r`, and `(C, N)` becomes `(N, C)`; then crop."""
    first = next(iter(phases.values()))
    zeros = jnp.zeros_like(first)  # phases no tap reaches (kernel smaller than stride, or dilation)
    stacked = jnp.stack([phases.get(r, zeros) for r in _taps(spec.stride)], axis=-1)
    full = interleave(stacked, "CN" + "X" * spec.ndim + "P", spec.stride)
    crop = [(-lo, size + lo - n) for (lo, _), size, n in zip(spec.padding, out_spatial, full.shape[2:], strict=True)]
    return pad_spatial(full, crop)


def _taps(shape: tuple[int, ...]):
    """Every index of `shape` in row-major order: the kernel taps of `w.reshape(..., -1)`, or the phases."""
    return itertools.product(*(range(k) for k in shape))
