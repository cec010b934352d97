"""Argument canonicalisation and the integer arithmetic of (transposed) convolutions.

This is the ground floor: every public function checks its arguments here, once, in plain
Python, before anything is traced, and hands the forms one frozen, hashable `Spec`.

One number describes padding everywhere. For each spatial axis `padding[i] = (low, high)` is
the zero padding that the *convolution* adds to its input; equivalently it is what the
*transposed* convolution crops from the start and the end of its full (uncropped) output.
A negative `high` crops the conv's input, i.e. extends the transposed output with rows that
no input reaches: this is how PyTorch's `output_padding` is represented (`high = p - op`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
from jax import lax

Method = Literal["auto", "vjp", "matmul", "scatter", "subpixel"]
METHODS: tuple[Method, ...] = ("auto", "vjp", "matmul", "scatter", "subpixel")

DEFAULT_MATRIX_BUDGET = 256 * 2**20
"""The default budget, in bytes, for one explicit conv matrix (`method="matmul"`, `conv_matrix`): 256 MiB."""

Pairs = tuple[tuple[int, int], ...]
IntOrSequence = int | Sequence[int]
"""One int for every spatial axis, or one per axis."""
Padding = int | Sequence[int] | Sequence[tuple[int, int]] | str
"""PyTorch's int padding (per axis or for all), `(low, high)` crops per axis, or 'SAME' / 'VALID'."""
Precision = Any
"""Anything `jax.lax` takes as `precision`: None, a `jax.lax.Precision`, a string or a pair of them."""
DType = Any
"""A dtype or something `numpy.dtype` reads as one (e.g. `jnp.float32`)."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A convolution's hyper-parameters in canonical form (per spatial axis).

    The transposed convolution described by a `Spec` is the adjoint of the convolution
    described by the same `Spec`. Every form of the library receives one.
    """

    stride: tuple[int, ...]
    padding: Pairs
    dilation: tuple[int, ...]
    groups: int
    precision: Any = None
    preferred_element_type: Any = None
    matrix_budget: int = DEFAULT_MATRIX_BUDGET
    channels_last: bool = False
    """Whether the caller's input and output are channels-last (`Layout.channels_last`, e.g. the Flax
    layers'): a form that can compute on channels-last arrays then does, so that its transposes cancel
    `conv_transpose`'s into and out of the canonical layout (the scatter form; `auto`'s dilated
    stride-1 rule). Never changes a value."""

    @property
    def ndim(self) -> int:
        return len(self.stride)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Permutations that bring (lhs, rhs, out) arrays into the canonical channels-first order.

    Canonical: lhs `(N, C, *spatial)`, rhs `(C_in, C_out // groups, *kernel)` for a transposed
    convolution (`(C_out, C_in // groups, *kernel)` for a convolution), out `(N, C, *spatial)`.
    """

    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    out: tuple[int, ...]
    batched: bool = True

    @property
    def is_canonical(self) -> bool:
        return all(p == tuple(range(len(p))) for p in (self.lhs, self.rhs, self.out))

    @property
    def channels_last(self) -> bool:
        """Whether input and output are `(N, *spatial, C)`, as in ('NHWC', ..., 'NHWC')."""
        return all(p == (0, len(p) - 1, *range(1, len(p) - 1)) for p in (self.lhs, self.out))


def lax_layout(ndim: int, channels_last: bool = False) -> tuple[str, str, str]:
    """The `jax.lax` dimension numbers of channels-first (or channels-last) arrays with `ndim` spatial axes.

    Example:
        >>> lax_layout(2), lax_layout(1, channels_last=True)
        (('NCHW', 'OIHW', 'NCHW'), ('NWC', 'WIO', 'NWC'))
    """
    sp = "DHW"[3 - ndim :]
    if channels_last:
        return (f"N{sp}C", f"{sp}IO", f"N{sp}C")
    return (f"NC{sp}", f"OI{sp}", f"NC{sp}")


# --------------------------------------------------------------------------- shape arithmetic


def dilated_kernel(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """The extent of each kernel axis once dilated: `d * (k - 1) + 1`."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def conv_spatial(in_spatial, kernel, spec: Spec) -> tuple[int, ...]:
    """Spatial output size of `conv` (may be <= 0 for an empty output)."""
    return tuple(
        (n + lo + hi - dk) // s + 1
        for n, dk, s, (lo, hi) in zip(in_spatial, dilated_kernel(kernel, spec.dilation), spec.stride, spec.padding)
    )


def transpose_spatial(in_spatial, kernel, spec: Spec) -> tuple[int, ...]:
    """Spatial output size of the transposed convolution: full size minus the crops."""
    return tuple(
        (n - 1) * s + dk - lo - hi
        for n, dk, s, (lo, hi) in zip(in_spatial, dilated_kernel(kernel, spec.dilation), spec.stride, spec.padding)
    )


def conv_output_shape(input_shape, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Spatial output size of `conv` for a spatial input size, as PyTorch computes it.

    `floor((n + 2 p - d (k - 1) - 1) / s) + 1` per axis, or JAX's rule for 'SAME'/'VALID'.

    Example:
        >>> conv_output_shape((17, 18), 3, stride=2, padding=1)
        (9, 9)
    """
    input_shape = int_tuple("input_shape", input_shape, None)
    ndim = len(input_shape)
    kernel = int_tuple("kernel_size", kernel_size, ndim, minimum=1)
    spec = make_spec(ndim, input_shape, kernel, stride, padding, dilation, 1, None, transpose=False)
    return conv_spatial(input_shape, kernel, spec)


def conv_transpose_output_shape(
    input_shape, kernel_size, stride=1, padding=0, output_padding=0, dilation=1
) -> tuple[int, ...]:
    """Spatial output size of `conv_transpose`, as PyTorch computes it.

    `(n - 1) s - 2 p + d (k - 1) + output_padding + 1` per axis; for 'SAME' / 'VALID',
    what `jax.lax.conv_transpose` gives (`n s` and `n s + max(d (k - 1) + 1 - s, 0)`).

    Example:
        >>> conv_transpose_output_shape((9, 9), 3, stride=2, padding=1, output_padding=(0, 1))
        (17, 18)
    """
    input_shape = int_tuple("input_shape", input_shape, None)
    ndim = len(input_shape)
    kernel = int_tuple("kernel_size", kernel_size, ndim, minimum=1)
    spec = make_spec(ndim, input_shape, kernel, stride, padding, dilation, 1, None, output_padding=output_padding)
    return transpose_spatial(input_shape, kernel, spec)


# ----------------------------------------------------------------------- public entry points


def conv_transpose_spec(
    input,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    groups,
    dilation,
    output_shape,
    dimension_numbers,
    precision,
    preferred_element_type=None,
    matrix_budget=None,
) -> tuple[Spec, Layout]:
    """Check every argument of `conv_transpose` and return its canonical `Spec` and `Layout`."""
    ndim, batched = _rank(input, weight)
    layout = _layout(dimension_numbers, ndim, transpose=True, batched=batched)
    yshape, wshape = batch_shape(input.shape, layout), permute(weight.shape, layout.rhs)
    _check_dtypes(input, weight)
    _check_channels_transpose(yshape, wshape, groups)
    _check_bias(bias, input, wshape[1] * groups)
    spec = make_spec(
        ndim, yshape[2:], wshape[2:], stride, padding, dilation, groups, precision, output_padding=output_padding
    )
    if output_shape is not None:
        spec = _with_output_shape(spec, yshape[2:], wshape[2:], output_shape, output_padding)
    _check_nonempty(transpose_spatial(yshape[2:], wshape[2:], spec), "transposed convolution", spec)
    spec = dataclasses.replace(spec, channels_last=layout.channels_last)
    return _finish(spec, input.dtype, preferred_element_type, matrix_budget), layout


def conv_spec(
    input, weight, bias, stride, padding, dilation, groups, dimension_numbers, precision, preferred_element_type=None
) -> tuple[Spec, Layout]:
    """Check every argument of `conv` and return its canonical `Spec` and `Layout`."""
    ndim, batched = _rank(input, weight)
    layout = _layout(dimension_numbers, ndim, transpose=False, batched=batched)
    xshape, wshape = batch_shape(input.shape, layout), permute(weight.shape, layout.rhs)
    _check_dtypes(input, weight)
    _check_channels_conv(xshape, wshape, groups)
    _check_bias(bias, input, wshape[0])
    spec = make_spec(ndim, xshape[2:], wshape[2:], stride, padding, dilation, groups, precision, transpose=False)
    _check_nonempty(conv_spatial(xshape[2:], wshape[2:], spec), "convolution", spec)
    return _finish(spec, input.dtype, preferred_element_type, None), layout


def overlaps(kernel: tuple[int, ...], spec: Spec) -> bool:
    """Whether kernel taps overlap in the output: `kernel > stride` or a dilation on some axis (else
    every input element writes its own block, as in U-Net's and V-Net's k2 s2)."""
    return not all(k <= s and d == 1 for k, s, d in zip(kernel, spec.stride, spec.dilation, strict=True))


def accumulation_dtype(dtype, preferred_element_type=None) -> np.dtype:
    """The dtype that convolutions and products accumulate in, and the dtype of the result's sum.

    float16 and bfloat16 operands accumulate in float32 (the operands themselves stay in their dtype;
    only the result is cast back to it); `preferred_element_type` asks for another accumulation dtype,
    which is then also the result's dtype (as in `jax.lax`).

    Example:
        >>> accumulation_dtype(jnp.bfloat16).name, accumulation_dtype(jnp.float32).name
        ('float32', 'float32')
    """
    dtype = np.dtype(dtype)
    if preferred_element_type is None:
        return np.dtype(np.float32) if dtype.itemsize < 4 else dtype
    pref = np.dtype(preferred_element_type)
    if not jnp.issubdtype(pref, jnp.floating) or pref.itemsize < dtype.itemsize:
        raise TypeError(
            f"preferred_element_type={pref.name} must be a floating dtype at least as wide as the inputs' "
            f"{dtype.name}; leave it as None to accumulate half precision in float32."
        )
    return pref


def result_dtype(dtype, spec: Spec) -> np.dtype:
    """The dtype of the result: the user's `preferred_element_type`, else the inputs' dtype."""
    return np.dtype(dtype) if spec.preferred_element_type is None else np.dtype(spec.preferred_element_type)


def check_method(method) -> Method:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}. Use 'auto' unless you need a specific form.")
    return method


def _finish(spec: Spec, dtype, preferred_element_type, matrix_budget) -> Spec:
    if preferred_element_type is not None:
        preferred_element_type = accumulation_dtype(dtype, preferred_element_type)
    return with_matrix_budget(dataclasses.replace(spec, preferred_element_type=preferred_element_type), matrix_budget)


def with_matrix_budget(spec: Spec, matrix_budget) -> Spec:
    """`spec` with its `matrix_budget` checked and set (None: `DEFAULT_MATRIX_BUDGET`)."""
    if matrix_budget is None:
        matrix_budget = DEFAULT_MATRIX_BUDGET
    elif not is_int(matrix_budget) or matrix_budget < 0:
        raise ValueError(
            f"matrix_budget={matrix_budget!r} must be a number of bytes >= 0 (0 refuses every matrix), or None for "
            f"the default {DEFAULT_MATRIX_BUDGET} (256 MiB)."
        )
    return dataclasses.replace(spec, matrix_budget=int(matrix_budget))


# ------------------------------------------------------------------------------- the checks


def _rank(input, weight) -> tuple[int, bool]:
    """The number of spatial axes, and whether `input` has a batch axis (PyTorch also takes `(C, *spatial)`)."""
    for name, a in (("input", input), ("weight", weight)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"{name} must be an array (jax.Array or numpy.ndarray), got {type(a).__name__}.")
    if weight.ndim not in (3, 4, 5):
        raise ValueError(
            f"weight has shape {tuple(weight.shape)} (rank {weight.ndim}); it must have rank 3, 4 or 5: two channel "
            f"axes and one kernel axis per spatial axis, for 1-D, 2-D or 3-D."
        )
    nd = weight.ndim - 2
    if input.ndim not in (nd + 1, nd + 2):
        raise ValueError(
            f"input has shape {tuple(input.shape)} (rank {input.ndim}) but weight has shape {tuple(weight.shape)}, "
            f"a {nd}-D kernel; input must have rank {nd + 2} (batch, channels, *spatial) or {nd + 1} (channels, "
            f"*spatial) without a batch axis. Check that the kernel has the input's number of spatial axes."
        )
    return nd, input.ndim == nd + 2


def _check_dtypes(input, weight) -> None:
    for name, a in (("input", input), ("weight", weight)):
        dt = np.dtype(a.dtype)
        if not jnp.issubdtype(dt, jnp.floating):
            kind = "complex" if jnp.issubdtype(dt, jnp.complexfloating) else "integer or bool"
            raise TypeError(
                f"{name} has dtype {dt.name}; {kind} dtypes are not supported. "
                f"Cast to a floating dtype first, e.g. {name}.astype(jnp.float32)."
            )
    if np.dtype(input.dtype) != np.dtype(weight.dtype):
        raise TypeError(
            f"input has dtype {np.dtype(input.dtype).name} but weight has dtype {np.dtype(weight.dtype).name}; they "
            f"must match (as in PyTorch). Cast one of them, e.g. weight.astype(input.dtype)."
        )


def _check_bias(bias, input, c_out: int) -> None:
    if bias is None:
        return
    if not hasattr(bias, "shape") or not hasattr(bias, "dtype"):
        raise TypeError(f"bias must be an array of shape ({c_out},) or None, got {type(bias).__name__}.")
    if tuple(bias.shape) != (c_out,):
        raise ValueError(
            f"bias has shape {tuple(bias.shape)}; it must be ({c_out},), one value per output channel (as in PyTorch)."
        )
    if np.dtype(bias.dtype) != np.dtype(input.dtype):
        raise TypeError(
            f"bias has dtype {np.dtype(bias.dtype).name} but input has dtype {np.dtype(input.dtype).name}; they must "
            f"match (as in PyTorch). Cast it, e.g. bias.astype(input.dtype)."
        )


def check_groups(groups) -> None:
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive integer.")


def _check_channels_transpose(yshape, wshape, groups) -> None:
    check_groups(groups)
    if 0 in wshape:
        raise ValueError(
            f"weight has shape {wshape} (canonical (C_in, C_out // groups, *kernel)); no axis may be empty."
        )
    if 0 in yshape[1:]:
        raise ValueError(f"input has shape {yshape} (canonical (N, C_in, *spatial)); only the batch axis may be empty.")
    if yshape[1] != wshape[0]:
        raise ValueError(
            f"input has {yshape[1]} channels but weight has shape {wshape}, i.e. {wshape[0]} input channels; it must be "
            f"(C_in, C_out // groups, *kernel) with C_in = {yshape[1]}, the same array as the weight of the conv "
            f"that this transposes (PyTorch's ConvTranspose weight layout)."
        )
    if yshape[1] % groups:
        raise ValueError(f"groups={groups} must divide the {yshape[1]} input channels of input.")


def _check_channels_conv(xshape, wshape, groups) -> None:
    check_groups(groups)
    if 0 in wshape:
        raise ValueError(
            f"weight has shape {wshape} (canonical (C_out, C_in // groups, *kernel)); no axis may be empty."
        )
    if 0 in xshape[1:]:
        raise ValueError(f"input has shape {xshape} (canonical (N, C_in, *spatial)); only the batch axis may be empty.")
    if xshape[1] != wshape[1] * groups:
        raise ValueError(
            f"input has {xshape[1]} channels but weight has shape {wshape}, i.e. {wshape[1]} x groups={groups} = "
            f"{wshape[1] * groups} input channels; weight must be (C_out, C_in // groups, *kernel)."
        )
    if wshape[0] % groups:
        raise ValueError(f"groups={groups} must divide the {wshape[0]} output channels of weight (its first axis).")


def _check_nonempty(out_spatial, what, spec) -> None:
    if min(out_spatial) < 1:
        raise ValueError(
            f"the {what} output would have spatial shape {tuple(out_spatial)} (padding (low, high) = "
            f"{spec.padding}, stride {spec.stride}, dilation {spec.dilation}); every size must be >= 1. "
            f"Use less padding or a larger input."
        )


def int_tuple(name, value, ndim, minimum=None) -> tuple[int, ...]:
    """An int or a sequence of `ndim` ints, as a tuple; bools and floats are refused."""
    items = [value] * (ndim or 1) if is_int(value) else value
    if not isinstance(items, Sequence) or isinstance(items, str) or not all(is_int(v) for v in items):
        raise TypeError(
            f"{name}={value!r} must be an int or a tuple of ints"
            + (f" (one per spatial axis, {ndim})." if ndim else ".")
        )
    if ndim is not None and len(items) != ndim:
        raise ValueError(
            f"{name}={value!r} has {len(items)} entries but there are {ndim} spatial axes; give one int per axis or a single int."
        )
    if minimum is not None and min(items, default=minimum) < minimum:
        raise ValueError(f"{name}={value!r}: every entry must be >= {minimum}.")
    return tuple(int(v) for v in items)


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def make_spec(
    ndim, in_spatial, kernel, stride, padding, dilation, groups, precision, *, output_padding=0, transpose=True
) -> Spec:
    """The `Spec` of checked integer arguments: strides, dilations, padding pairs (output_padding as negative high)."""
    stride = int_tuple("stride", stride, ndim, minimum=1)
    dilation = int_tuple("dilation", dilation, ndim, minimum=1)
    pads = _padding(padding, ndim, in_spatial, kernel, stride, dilation, transpose)
    if transpose:
        op = int_tuple("output_padding", output_padding, ndim, minimum=0)
        for s, d, o in zip(stride, dilation, op):
            if o >= max(s, d):
                raise ValueError(
                    f"output_padding={output_padding!r} must be smaller than the stride {stride} or the dilation "
                    f"{dilation} on each axis (as in PyTorch); use output_shape= to pick the output size instead."
                )
        pads = tuple((lo, hi - o) for (lo, hi), o in zip(pads, op))
    return Spec(stride, pads, dilation, int(groups), precision)


def _padding(padding, ndim, in_spatial, kernel, stride, dilation, transpose) -> Pairs:
    if isinstance(padding, str):
        return _string_padding(padding, in_spatial, kernel, stride, dilation, transpose)
    if isinstance(padding, Sequence) and padding and all(isinstance(p, Sequence) for p in padding):
        pairs = tuple(int_tuple("padding", tuple(p), 2) for p in padding)
        if len(pairs) != ndim:
            raise ValueError(
                f"padding={padding!r} has {len(pairs)} (low, high) pairs but there are {ndim} spatial axes."
            )
    else:
        pairs = tuple((p, p) for p in int_tuple("padding", padding, ndim))
    if min(min(p) for p in pairs) < 0:
        raise ValueError(f"padding={padding!r} must not be negative (as in PyTorch); crop the result instead.")
    return pairs


def _string_padding(padding, in_spatial, kernel, stride, dilation, transpose) -> Pairs:
    name = padding.upper()
    if name not in ("SAME", "VALID") and not (name == "SAME_LOWER" and not transpose):
        raise ValueError(f"padding={padding!r} must be an int, a tuple of ints, 'SAME' or 'VALID'.")
    dk = dilated_kernel(kernel, dilation)
    if not transpose:
        return tuple(tuple(p) for p in lax.padtype_to_pads(in_spatial, dk, stride, name))
    return tuple(_lax_transpose_crop(k, s, name) for k, s in zip(dk, stride))


def _lax_transpose_crop(k: int, s: int, name: str) -> tuple[int, int]:
    """The crop that gives `jax.lax.conv_transpose(..., padding=name)` for dilated kernel size `k`."""
    if name == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    else:  # VALID
        pad_len = k + s - 2 + max(k - s, 0)
        pad_a = k - 1
    return (k - 1 - pad_a, k - 1 - (pad_len - pad_a))


def _with_output_shape(spec, in_spatial, kernel, output_shape, output_padding) -> Spec:
    if output_padding != 0 and any(np.atleast_1d(output_padding)):
        raise ValueError("give output_shape or output_padding, not both: output_shape picks output_padding for you.")
    want = int_tuple("output_shape", output_shape, spec.ndim, minimum=1)
    base = transpose_spatial(in_spatial, kernel, spec)
    extra = tuple(t - b for t, b in zip(want, base))
    reach = tuple(max(s, d) - 1 for s, d in zip(spec.stride, spec.dilation))
    if any(e < 0 or e > r for e, r in zip(extra, reach)):
        ranges = ", ".join(f"{b}..{b + r}" for b, r in zip(base, reach))
        raise ValueError(
            f"output_shape={output_shape!r} cannot be reached from input spatial shape {tuple(in_spatial)} with "
            f"these arguments; the reachable sizes per axis are {ranges} (output_padding below max(stride, dilation))."
        )
    return dataclasses.replace(spec, padding=tuple((lo, hi - e) for (lo, hi), e in zip(spec.padding, extra)))


# -------------------------------------------------------------------------------------- layout


def _layout(dimension_numbers, ndim, *, transpose, batched=True) -> Layout:
    if dimension_numbers is None:
        ident = tuple(range(ndim + 2))
        return Layout(ident, ident, ident, batched)
    if not (isinstance(dimension_numbers, Sequence) and len(dimension_numbers) == 3):
        raise TypeError(
            f"dimension_numbers={dimension_numbers!r} must be three layout strings, e.g. ('NHWC', 'HWIO', 'NHWC')."
        )
    dummy = (1,) * (ndim + 2)
    try:
        dn = lax.conv_dimension_numbers(dummy, dummy, tuple(dimension_numbers))
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(
            f"dimension_numbers={dimension_numbers!r} is not a valid lax layout for {ndim} spatial axes: {e}"
        ) from None
    rhs = dn.rhs_spec
    if transpose:  # our kernel is (I, O // groups, ...): I is the transposed conv's input channel
        rhs = (rhs[1], rhs[0], *rhs[2:])
    return Layout(tuple(dn.lhs_spec), tuple(rhs), tuple(dn.out_spec), batched)


def permute(shape, perm) -> tuple[int, ...]:
    """`shape` read in the order `perm` (e.g. a user-layout shape in canonical order)."""
    return tuple(int(shape[p]) for p in perm)


def batch_shape(shape, layout: Layout) -> tuple[int, ...]:
    """The canonical `(N, C, *spatial)` shape of an input of `shape` (N = 1 where it has no batch axis)."""
    if not layout.batched:
        shape = (*shape[: layout.lhs[0]], 1, *shape[layout.lhs[0] :])
    return permute(shape, layout.lhs)


def add_batch_axis(a, layout: Layout):
    """An unbatched input (PyTorch's `(C, *spatial)`) with its batch axis of size 1 put back; else `a`."""
    return a if layout.batched else jnp.expand_dims(a, layout.lhs[0])


def drop_batch_axis(out, layout: Layout):
    """The result of an unbatched input without its batch axis; else `out`."""
    return out if layout.batched else jnp.squeeze(out, layout.out[0])


def to_canonical(a, perm):
    """Transpose an array of the user's layout into the canonical one."""
    return a if perm == tuple(range(a.ndim)) else a.transpose(perm)


def from_canonical(a, perm):
    """Transpose a canonical array back to the user's layout."""
    return a if perm == tuple(range(a.ndim)) else a.transpose(tuple(np.argsort(perm)))
