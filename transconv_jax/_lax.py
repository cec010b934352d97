"""The jax.lax form: the lowering that `jax.lax.conv_transpose(..., transpose_kernel=True)` emits.

One convolution of the zero-inserted input (`lhs_dilation = stride`) with the flipped kernel,
padded by `d (k - 1) - crop` on each side, with `feature_group_count` so that grouped layers run
too. It is what a user switching from `jax.lax` or Flax already has, and on XLA:CPU it is the
fastest form on some stride-1 layers. Like the vjp form, the strided *and* dilated family (on
which jax 0.10's XLA:CPU aborts) takes the explicit lowering (`lax.pad` inserts the zeros).
"""

from __future__ import annotations

import jax
from jax import lax

from ._conv import _NCX, flip_kernel
from ._spec import Spec, dilated_kernel
from ._vjp import _xla_cpu_hazard, conv_transpose_explicit


def conv_transpose_lax_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y` as `jax.lax.conv_transpose` lowers it: lhs dilation and the flipped kernel.

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
        >>> conv_transpose_lax_form(jnp.array([[[1.0, 10.0]]]), jnp.array([[[1.0, 2.0, 3.0]]]), spec)
        Array([[[ 1.,  2., 13., 20., 30.]]], dtype=float32)
    """
    if _xla_cpu_hazard(spec):
        return conv_transpose_explicit(y, w, spec)
    dk = dilated_kernel(w.shape[2:], spec.dilation)
    return lax.conv_general_dilated(
        y,
        flip_kernel(w, spec.groups),
        window_strides=(1,) * spec.ndim,
        padding=[(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding, strict=True)],
        lhs_dilation=spec.stride,
        rhs_dilation=spec.dilation,
        dimension_numbers=_NCX[spec.ndim],
        feature_group_count=spec.groups,
        precision=spec.precision,
    )
