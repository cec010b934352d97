"""The plain convolution (PyTorch's `conv{1,2,3}d`) that every transposed form is the adjoint of,
and the array helpers the forms share: mixed-precision products, padding, kernel regrouping.

Half precision. Every convolution and matrix product of the library goes through `accumulate`:
float16 / bfloat16 operands stay in their dtype and the product accumulates in float32 through
`preferred_element_type`. JAX's own transpose rule of such a product would run the backward in
float32 (it converts the cotangent and the other operand), so `accumulate` has a `custom_jvp`
whose tangent is the same product without `preferred_element_type`, on half-precision operands
with a float32 result: reverse mode then rounds the cotangent to the operands' dtype once and
runs both gradients as half-precision products, which cuDNN and the TPU accumulate in float32
anyway (and XLA:CPU computes in float32, rounding the result once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from ._spec import (
    DType,
    IntOrSequence,
    Padding,
    Precision,
    Spec,
    accumulation_dtype,
    add_batch_axis,
    conv_spec,
    drop_batch_axis,
    from_canonical,
    lax_layout,
    result_dtype,
    to_canonical,
)

Product = Callable[..., jax.Array]
"""A bilinear op `product(a, b, preferred_element_type)`, e.g. a convolution or an einsum."""


def accumulate(product: Product, a: jax.Array, b: jax.Array, acc) -> jax.Array:
    """`product(a, b)` accumulated in `acc`, with half-precision operands kept in their dtype, both ways.

    Args:
        product: bilinear in `(a, b)`, taking the accumulation dtype as its third argument
            (`None`: the operands' dtype).
        a, b: the operands, of one dtype.
        acc: the accumulation dtype, also the result's.

    Returns:
        `product(a, b, acc)`; its derivatives are `product` on operands of `a`'s dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> dot = lambda a, b, acc: jnp.dot(a, b, preferred_element_type=acc)
        >>> accumulate(dot, jnp.ones(3, jnp.bfloat16), jnp.ones(3, jnp.bfloat16), jnp.float32).dtype
        dtype('float32')
    """
    if np.dtype(a.dtype) == np.dtype(acc):
        return product(a, b, None)
    return _mixed(product, np.dtype(acc), a, b)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _mixed(product: Product, acc, a: jax.Array, b: jax.Array) -> jax.Array:
    return product(a, b, acc)


@functools.partial(_mixed.defjvp, symbolic_zeros=True)
def _mixed_jvp(product, acc, primals, tangents):
    a, b = primals
    ta, tb = tangents
    out = _mixed(product, acc, a, b)
    return out, bilinear_tangent(out, (lambda ta: product(ta, b, None), ta), (lambda tb: product(a, tb, None), tb))


def bilinear_tangent(out: jax.Array, *parts) -> jax.Array:
    """The tangent of a bilinear map from its `(linear map, tangent)` parts, one per operand.

    A `custom_jvp` rule with `symbolic_zeros=True` gets `SymbolicZero` for an operand nobody
    differentiates: its part is skipped, so that gradient is never computed. The others are summed
    in `out`'s dtype; zeros if every tangent is symbolic.
    """
    terms = [f(t).astype(out.dtype) for f, t in parts if not isinstance(t, jax.custom_derivatives.SymbolicZero)]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def conv_general(x: jax.Array, w: jax.Array, spec: Spec, *, round_on_gpu: bool = False, **params) -> jax.Array:
    """`lax.conv_general_dilated(x, w, **params)` with `spec`'s precision, accumulated in `spec`'s dtype.

    `params` are the convolution's own (strides, padding, dilations, dimension numbers, groups);
    the operands keep their dtype (see `accumulate`). `round_on_gpu`: on a GPU, half-precision
    operands give a half-precision convolution, converted to the accumulation dtype after it
    (see `_conv_product`).
    """
    params = tuple(params.items())
    conv = functools.partial(_conv_product, params=params, precision=spec.precision, round_on_gpu=round_on_gpu)
    return accumulate(conv, x, w, accumulation_dtype(x.dtype, spec.preferred_element_type))


def _conv_product(x, w, acc, *, params, precision, round_on_gpu=False):
    """The convolution, its result in `acc` (None: the operands' dtype).

    With `round_on_gpu`, a convolution asked for a wider `acc` than its operands' dtype is, on
    CUDA and ROCm, run in the operands' dtype and converted after: the vjp form's
    `lhs_dilation` convolution in bfloat16 with a float32 result ran several times slower than
    `jax.lax.conv_transpose` on an H200, whose result is bfloat16 (cuDNN accumulates in float32
    inside either). `accumulate` asks for `acc` in the primal only, so the choice made at lowering
    (`platform_dependent`) is never differentiated: the derivatives are the tangent's products.
    """

    def conv(x, w, acc):
        return lax.conv_general_dilated(x, w, **dict(params), precision=precision, preferred_element_type=acc)

    if acc is None or not round_on_gpu:
        return conv(x, w, acc)
    on_gpu = lambda x, w: conv(x, w, None).astype(acc)  # noqa: E731
    return lax.platform_dependent(x, w, cuda=on_gpu, rocm=on_gpu, default=lambda x, w: conv(x, w, acc))


def conv_canonical(x: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`conv` on canonical arrays: `x` is `(N, C_in, *spatial)`, `w` is `(C_out, C_in // groups, *kernel)`.

    The result is in the accumulation dtype (float32 for half-precision operands).
    """
    return conv_general(
        x,
        w,
        spec,
        window_strides=spec.stride,
        padding=spec.padding,
        rhs_dilation=spec.dilation,
        dimension_numbers=lax_layout(spec.ndim),
        feature_group_count=spec.groups,
    )


def pad_spatial(x: jax.Array, pads, *, interior=None, channels_last: bool = False) -> jax.Array:
    """Zero-pad (or crop, where negative) the spatial axes of `(N, C, *spatial)` or `(N, *spatial, C)`.

    Args:
        x: the array.
        pads: one `(low, high)` pair per spatial axis.
        interior: zeros inserted between elements per spatial axis, or None.
        channels_last: whether the channel axis is last.

    Returns:
        The padded array (`x` itself when there is nothing to do).
    """
    interior = interior or (0,) * len(pads)
    if all(p == (0, 0) for p in pads) and not any(interior):
        return x
    if all(lo <= 0 and hi <= 0 for lo, hi in pads) and not any(interior):  # a crop: a slice
        first = 1 if channels_last else 2
        start = [0] * x.ndim
        stop = list(x.shape)
        for i, (lo, hi) in enumerate(pads):
            start[first + i], stop[first + i] = -lo, x.shape[first + i] + hi
        return lax.slice(x, start, stop)
    config = [(lo, hi, i) for (lo, hi), i in zip(pads, interior, strict=True)]
    config = [(0, 0, 0), *config, (0, 0, 0)] if channels_last else [(0, 0, 0)] * 2 + config
    return zero_pad(x, config)


def zero_pad(x: jax.Array, config) -> jax.Array:
    """`lax.pad(x, 0, config)`, one `(low, high, interior)` per axis (negative: a crop); `x` itself
    where every entry is 0. Such a pad is no op for XLA, but JAX traces it, differentiates it and
    transposes it into a slice (`benchmarks/ab.py --trace`).

    Example:
        >>> x = jnp.ones((2, 3))
        >>> zero_pad(x, [(0, 0, 0), (0, 0, 0)]) is x
        True
        >>> zero_pad(x, [(0, 0, 0), (1, -1, 0)])[0]
        Array([0., 1., 1.], dtype=float32)
    """
    if all(tuple(c) == (0, 0, 0) for c in config):
        return x
    return lax.pad(x, np.zeros((), x.dtype), config)


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


def as_array(a) -> jax.Array:
    """Keep jax and numpy arrays (and tracers) as they are; turn anything else into a jax array."""
    return a if hasattr(a, "shape") and hasattr(a, "dtype") else jnp.asarray(a)


def add_bias(out: jax.Array, bias: jax.Array | None) -> jax.Array:
    """`out (N, C, *spatial)` plus `bias (C,)` cast to `out`'s (accumulation) dtype."""
    if bias is None:
        return out
    return out + bias.astype(out.dtype).reshape(1, -1, *(1,) * (out.ndim - 2))


def conv(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    dilation: IntOrSequence = 1,
    groups: int = 1,
    *,
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
) -> jax.Array:
    """Convolution with PyTorch's numbers and positional arguments (`torch.nn.functional.conv{1,2,3}d`).

    Strictly a cross-correlation, as in every deep-learning library.

    Args:
        input: `(N, C_in, *spatial)` with 1 to 3 spatial axes, or `(C_in, *spatial)` without a batch
            axis (as in PyTorch), or as `dimension_numbers` say.
        weight: `(C_out, C_in // groups, *kernel)`.
        bias: `(C_out,)` or None; added in the accumulation dtype, before the result is rounded.
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
        The convolution, `(N, C_out, *out_spatial)` in the output layout (no batch axis if `input` has none).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(9.0).reshape(1, 1, 3, 3)
        >>> k = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> conv(x, k)[0, 0]
        Array([[27., 37.],
               [57., 67.]], dtype=float32)
    """
    input, weight, bias = as_array(input), as_array(weight), None if bias is None else as_array(bias)
    spec, layout = conv_spec(
        input, weight, bias, stride, padding, dilation, groups, dimension_numbers, precision, preferred_element_type
    )
    return _conv_jit(input, weight, bias, spec, layout)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _conv_jit(x, w, bias, spec, layout):
    with jax.named_scope("transconv_jax.conv"):
        x = to_canonical(add_batch_axis(x, layout), layout.lhs)
        out = add_bias(conv_canonical(x, to_canonical(w, layout.rhs), spec), bias)
        return drop_batch_axis(from_canonical(out.astype(result_dtype(x.dtype, spec)), layout.out), layout)
