"""The defining form: the transposed convolution is the adjoint of `conv`, lowered as `jax.vjp` lowers it.

The transpose of `z -> conv(z, w)` is the convolution of `y`, dilated by the stride (`lhs_dilation`),
with the flipped, regrouped kernel and padding `d (k - 1) - crop` per side: exactly what JAX's
transpose rule of `conv_general_dilated` (and `jax.lax.conv_transpose`) emits, and what reaches
cuDNN's backward-data kernel on a GPU. It is written out here rather than obtained from
`jax.linear_transpose`, so that half-precision operands accumulate in float32 (`accumulate`); the
tests check it against `jax.linear_transpose` of `conv`.

XLA:CPU of jax 0.10 aborts on some such convolutions with both a stride and a dilation above 1;
on CPU those insert the zeros with `lax.pad` instead (`explicit`), decided at lowering time.

Sharding needs nothing here: GSPMD partitions one convolution over the batch, the kernel's output
channels or a spatial axis (halo exchange by collective-permute), as `tests/test_sharding.py` checks.
"""

from __future__ import annotations

import jax
import jaxlib
from jax import lax

from ._conv import conv_general, flip_kernel, pad_spatial
from ._spec import Spec, dilated_kernel, lax_layout


def conv_transpose_vjp_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`W.T @ y`: the convolution of the stride-dilated `y` with the flipped kernel.

    Args:
        y: `(N, C_in, *spatial)`.
        w: `(C_in, C_out // groups, *kernel)`: read as a conv kernel it maps `C_out` channels to
            `C_in`, so it is exactly the weight of the conv that this transposes.
        spec: the canonical `Spec`; negative high padding (`output_padding`) extends the output.

    Returns:
        `(N, C_out, *out_spatial)` in the accumulation dtype.
    """
    if not xla_cpu_hazard(spec):
        return lhs_dilated(y, w, spec)
    return lax.platform_dependent(
        y, w, cpu=lambda y, w: explicit(y, w, spec), default=lambda y, w: lhs_dilated(y, w, spec)
    )


XLA_CPU_FIXED_IN: tuple[int, ...] | None = None
"""The first jaxlib whose XLA:CPU no longer aborts on strided, dilated transposes; None while none is known.

`tests/test_xla_hazard.py` runs the raw lowering in a subprocess (the canary) and fails, naming the
installed version, once it stops aborting: then set this and the workaround goes for that jaxlib on.
"""


def xla_cpu_hazard(spec: Spec) -> bool:
    """Whether XLA:CPU of the installed jaxlib may abort on the `lhs_dilation` lowering of `spec`."""
    version = tuple(int(p) for p in jaxlib.__version__.split(".")[:3] if p.isdigit())
    fixed = XLA_CPU_FIXED_IN is not None and version >= XLA_CPU_FIXED_IN
    return max(spec.stride) > 1 and max(spec.dilation) > 1 and not fixed


def _edge_padding(w: jax.Array, spec: Spec):
    dk = dilated_kernel(w.shape[2:], spec.dilation)
    return tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding, strict=True))


def lhs_dilated(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The lowering of `jax.vjp`: `lhs_dilation` by the stride, flipped kernel, padding `d (k - 1) - crop`.

    On a GPU, in half precision, the convolution's result is in the operands' dtype, as in
    `jax.lax.conv_transpose` (`_conv._conv_product`; unless `preferred_element_type` is given).
    """
    return conv_general(
        y,
        flip_kernel(w, spec.groups),
        spec,
        round_on_gpu=spec.preferred_element_type is None,
        window_strides=(1,) * spec.ndim,
        padding=_edge_padding(w, spec),
        lhs_dilation=spec.stride,
        rhs_dilation=spec.dilation,
        dimension_numbers=lax_layout(spec.ndim),
        feature_group_count=spec.groups,
    )


def explicit(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The same map without `lhs_dilation`: zeros inserted by `lax.pad`, then a stride-1 conv (XLA:CPU's workaround)."""
    y_dilated = pad_spatial(y, _edge_padding(w, spec), interior=tuple(s - 1 for s in spec.stride))
    return conv_general(
        y_dilated,
        flip_kernel(w, spec.groups),
        spec,
        window_strides=(1,) * spec.ndim,
        padding=((0, 0),) * spec.ndim,
        rhs_dilation=spec.dilation,
        dimension_numbers=lax_layout(spec.ndim),
        feature_group_count=spec.groups,
    )
