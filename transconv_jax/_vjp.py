"""The defining form: the transposed convolution is the adjoint (`jax.linear_transpose`) of `conv`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._conv import _NCX, conv_canonical, flip_kernel
from ._spec import Spec, dilated_kernel, transpose_spatial


def conv_transpose_vjp_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y` computed as the linear transpose of `z -> conv(z, w)`.

    `y` is `(N, C_in, *spatial)`, `w` is `(C_in, C_out // groups, *kernel)`: read as a conv
    kernel it maps `C_out` channels to `C_in`, so it is exactly the weight of the conv that
    this transposes. Where that conv's input is cropped (`output_padding` beyond the stride),
    the negative padding in `spec` does the crop.
    """
    if _xla_cpu_hazard(spec):
        return conv_transpose_explicit(y, w, spec)
    c_out = w.shape[1] * spec.groups
    z_shape = (y.shape[0], c_out, *transpose_spatial(y.shape[2:], w.shape[2:], spec))
    transpose = jax.linear_transpose(lambda z: conv_canonical(z, w, spec), jax.ShapeDtypeStruct(z_shape, y.dtype))
    return transpose(y)[0]


def conv_transpose_explicit(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The same map, lowered without `lhs_dilation`: zeros inserted by `lax.pad`, then a
    stride-1 conv of the flipped kernel. The edge padding is `d (k - 1) - crop` (negative crops)."""
    dk = dilated_kernel(w.shape[2:], spec.dilation)
    config = [(0, 0, 0)] * 2 + [
        (k - 1 - lo, k - 1 - hi, s - 1) for k, s, (lo, hi) in zip(dk, spec.stride, spec.padding)
    ]
    y_dilated = lax.pad(y, jnp.zeros((), y.dtype), config)
    return lax.conv_general_dilated(
        y_dilated,
        flip_kernel(w, spec.groups),
        window_strides=(1,) * spec.ndim,
        padding=((0, 0),) * spec.ndim,
        rhs_dilation=spec.dilation,
        dimension_numbers=_NCX[spec.ndim],
        feature_group_count=spec.groups,
        precision=spec.precision,
    )


def _xla_cpu_hazard(spec: Spec) -> bool:
    """jax 0.10's XLA:CPU aborts on some transposes of strided, dilated convolutions
    (a failed CHECK in the algebraic simplifier); those take the explicit lowering."""
    return max(spec.stride) > 1 and max(spec.dilation) > 1
