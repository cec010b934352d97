"""The plain convolution (PyTorch's `conv{1,2,3}d`) that every transposed form is the adjoint of."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from ._spec import Spec, compute_dtypes, conv_spec, from_canonical, to_canonical

_NCX = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def conv_canonical(x: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`conv` on canonical arrays: `x` is `(N, C_in, *spatial)`, `w` is `(C_out, C_in // groups, *kernel)`."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=spec.stride,
        padding=spec.padding,
        rhs_dilation=spec.dilation,
        dimension_numbers=_NCX[spec.ndim],
        feature_group_count=spec.groups,
        precision=spec.precision,
    )


def regroup_kernel(w: jax.Array, groups: int) -> jax.Array:
    """Turn a transposed-conv kernel `(C_in, C_out // g, *k)` into the regular-conv layout
    `(C_out, C_in // g, *k)`: the channel axes swapped within each group, nothing flipped."""
    c_in, c_out_g, *k = w.shape
    w = w.reshape(groups, c_in // groups, c_out_g, *k).swapaxes(1, 2)
    return w.reshape(groups * c_out_g, c_in // groups, *k)


def flip_kernel(w: jax.Array, groups: int) -> jax.Array:
    """`regroup_kernel`, spatially flipped: the regular-conv kernel that computes the transposed
    convolution on a zero-inserted input."""
    w = regroup_kernel(w, groups)
    return jnp.flip(w, axis=tuple(range(2, w.ndim)))


def conv(
    x: ArrayLike,
    w: ArrayLike,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    dimension_numbers=None,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """Convolution with PyTorch's numbers (`torch.nn.functional.conv{1,2,3}d`).

    Strictly a cross-correlation, as in every deep-learning library.

    Args:
        x: input, `(N, C_in, *spatial)` with 1 to 3 spatial axes (or as `dimension_numbers` says).
        w: kernel, `(C_out, C_in // groups, *kernel)`.
        stride: int or one int per spatial axis.
        padding: int or one int per axis (PyTorch's meaning: zeros on both sides), a tuple of
            `(low, high)` pairs, or 'SAME' / 'VALID' (JAX's meaning).
        dilation: int or one int per axis.
        groups: number of channel groups.
        dimension_numbers: lax layout strings, e.g. `("NHWC", "HWIO", "NHWC")`.
        precision: passed to `jax.lax.conv_general_dilated`.
        preferred_element_type: the accumulation dtype, also the result's; by default float16 and
            bfloat16 accumulate in float32 and the result has the input dtype.

    Returns:
        The convolution, `(N, C_out, *out_spatial)` in the output layout.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(9.0).reshape(1, 1, 3, 3)
        >>> k = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> conv(x, k)[0, 0]
        Array([[27., 37.],
               [57., 67.]], dtype=float32)
    """
    x, w = _as_array(x), _as_array(w)
    spec, layout = conv_spec(x, w, stride, padding, dilation, groups, dimension_numbers, precision)
    return _conv_jit(x, w, spec, layout, compute_dtypes(x.dtype, preferred_element_type))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv_jit(x, w, spec, layout, dtypes):
    compute, result = dtypes
    x, w = to_canonical(x, layout.lhs).astype(compute), to_canonical(w, layout.rhs).astype(compute)
    return from_canonical(conv_canonical(x, w, spec).astype(result), layout.out)


def _as_array(a):
    """Keep jax and numpy arrays (and tracers) as they are; turn anything else into a jax array."""
    return a if hasattr(a, "shape") and hasattr(a, "dtype") else jnp.asarray(a)
