"""What the Flax modules (NNX and Linen) share: the forward pass around `conv_transpose`, checks, initialisers.

Both modules take channels-last input `(*batch, *spatial, in_features)` (any number of leading
batch axes, or none) and hold `kernel` of shape `(*kernel_size, in_features, out_features // groups)`
and `bias` of shape `(out_features,)`. The kernel is PyTorch's ConvTranspose weight with its two
channel axes moved last, so the numbers are PyTorch's for the same weights; note that this differs
from `flax.nnx.ConvTranspose`, whose integer padding pads the dilated input and whose kernel is not
flipped. Every argument goes to `conv_transpose` unchanged, which checks it.

Default initialisers are PyTorch's (`torch.nn.ConvTranspose{1,2,3}d.reset_parameters`): kernel and
bias uniform in `+-1 / sqrt(fan_in)` with `fan_in = (out_features // groups) * prod(kernel_size)`
(PyTorch's `kaiming_uniform_(a=sqrt(5))` reads the weight's second axis as the fan-in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike, PromoteDtypeFn

from ._dispatch import conv_transpose
from ._spec import int_tuple, is_int, lax_layout

IntOrTuple = int | Sequence[int]


def default_kernel_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """PyTorch's ConvTranspose weight initialiser for a kernel of shape `(*k, in, out // groups)`.

    Uniform in `+-1 / sqrt(fan_in)`, `fan_in = (out // groups) * prod(k)`: PyTorch's
    `kaiming_uniform_(a=sqrt(5))`, which reads the weight's second axis as the fan-in.

    Args:
        key: a PRNG key.
        shape: the kernel's shape.
        dtype: the parameters' dtype.

    Returns:
        The kernel.

    Example:
        >>> import jax
        >>> k = default_kernel_init(jax.random.key(0), (3, 3, 8, 4))
        >>> bool(jnp.abs(k).max() <= 1 / 6)
        True
    """
    return _uniform(key, shape, dtype, _torch_bound(shape))


def torch_bias_init(kernel_shape: Sequence[int]) -> Initializer:
    """PyTorch's ConvTranspose bias initialiser for a kernel of shape `(*k, in, out // groups)`.

    Uniform in `+-1 / sqrt(fan_in)` with the kernel's `fan_in = (out // groups) * prod(k)`.

    Args:
        kernel_shape: the module's kernel shape.

    Returns:
        A Flax initialiser `(key, shape, dtype) -> array`.

    Example:
        >>> import jax
        >>> b = torch_bias_init((4, 3, 1))(jax.random.key(0), (1,), jnp.float32)
        >>> bool(abs(b[0]) <= 0.5)
        True
    """
    bound = _torch_bound(kernel_shape)
    return lambda key, shape, dtype=jnp.float32: _uniform(key, shape, dtype, bound)


def _torch_bound(kernel_shape: Sequence[int]) -> float:
    return 1.0 / math.sqrt(math.prod(kernel_shape[:-2]) * kernel_shape[-1])


def _uniform(key: jax.Array, shape: Sequence[int], dtype: Any, bound: float) -> jax.Array:
    # Drawn flat and reshaped: XLA:CPU takes seconds to compile the random bits of a rank-5 shape.
    return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def conv_transpose_channels_last(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    *,
    strides,
    padding,
    output_padding,
    kernel_dilation,
    feature_group_count: int,
    mask: jax.Array | None,
    method: str,
    dtype: Dtype | None,
    precision: PrecisionLike,
    preferred_element_type: Dtype | None,
    promote_dtype: PromoteDtypeFn,
    output_shape,
) -> jax.Array:
    """The modules' forward pass: `conv_transpose` on channels-last input with any leading batch axes.

    The kernel is multiplied by `mask` (if any); then `x`, `kernel` and `bias` go through
    `promote_dtype(..., dtype=dtype)` (Flax's: cast to `dtype`, or promoted together when it is None).
    The bias is added in the accumulation dtype, so a bf16 result is rounded once.
    """
    nd = kernel.ndim - 2
    if mask is not None:
        if tuple(mask.shape) != tuple(kernel.shape):
            raise ValueError(
                f"mask has shape {tuple(mask.shape)} but the kernel has shape {tuple(kernel.shape)}; "
                "the mask multiplies the kernel elementwise and must have its shape."
            )
        kernel = kernel * mask
    batch, rest = x.shape[: x.ndim - nd - 1], x.shape[x.ndim - nd - 1 :]
    x, kernel, bias = promote_dtype((x, kernel, bias), dtype=dtype)
    out = conv_transpose(
        x.reshape((math.prod(batch), *rest)),
        kernel,
        bias,
        stride=strides,
        padding=padding,
        output_padding=output_padding,
        groups=feature_group_count,
        dilation=kernel_dilation,
        output_shape=output_shape,
        method=method,
        dimension_numbers=lax_layout(nd, channels_last=True),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return out.reshape((*batch, *out.shape[1:]))


def kernel_tuple(kernel_size: IntOrTuple) -> tuple[int, ...]:
    """`kernel_size` as a tuple of 1 to 3 positive ints; an int means one spatial axis (as in Flax)."""
    k = int_tuple("kernel_size", kernel_size, None, minimum=1)
    if not 1 <= len(k) <= 3:
        raise ValueError(f"kernel_size={kernel_size!r} must have 1, 2 or 3 entries (one per spatial axis).")
    return k


def kernel_shape(kernel_size: IntOrTuple, in_features: int, out_features: int, groups: int) -> tuple[int, ...]:
    """The kernel's shape `(*kernel_size, in_features, out_features // groups)`, arguments checked."""
    k = kernel_tuple(kernel_size)
    for name, n in (("feature_group_count", groups), ("in_features", in_features), ("out_features", out_features)):
        if not is_int(n) or n < 1:
            raise ValueError(f"{name}={n!r} must be a positive integer.")
        if n % groups:
            raise ValueError(f"feature_group_count={groups} must divide {name}={n}.")
    return (*k, int(in_features), int(out_features) // int(groups))


def check_rank(x: jax.Array, kernel_size: IntOrTuple) -> None:
    """Refuse an input with fewer axes than `(*spatial, features)`, and an int `kernel_size` on a rank >= 4 input.

    An int `kernel_size` means one spatial axis (as in Flax); on `(N, H, W, C)` it would silently run a
    1-D transposed convolution along W with `(N, H)` as batch axes, which is never what a PyTorch user meant.
    """
    nd = len(kernel_tuple(kernel_size))
    if is_int(kernel_size) and x.ndim >= 4:
        k = int(kernel_size)
        raise ValueError(
            f"kernel_size={k} is an int, which means one spatial axis, but x has shape {tuple(x.shape)} "
            f"(rank {x.ndim}): it would run a 1-D transposed convolution along axis {x.ndim - 2}. Give one size per "
            f"spatial axis, e.g. kernel_size={(k,) * min(x.ndim - 2, 3)}, or use ConvTranspose{min(x.ndim - 2, 3)}d; "
            f"for 1-D input with several batch axes write kernel_size=({k},)."
        )
    if x.ndim < nd + 1:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but kernel_size={kernel_size!r} has {nd} spatial axes; x must be "
            f"(*batch, *spatial, in_features) with {nd} spatial axes, i.e. rank >= {nd + 1}."
        )


def check_features(x: jax.Array, in_features: int) -> None:
    """Refuse an input whose last axis is not `in_features`, naming both."""
    if x.shape[-1] != in_features:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, i.e. {x.shape[-1]} features on its last axis, but the layer has "
            f"in_features={in_features}; the input is channels-last (*batch, *spatial, in_features)."
        )


def call_args(layer) -> dict[str, Any]:
    names = ("strides", "padding", "output_padding", "kernel_dilation", "feature_group_count", "mask", "method")
    return {n: getattr(layer, n) for n in (*names, "dtype", "precision", "preferred_element_type", "promote_dtype")}


def spatial_tuple(value: Any, nd: int) -> Any:
    """PyTorch's broadcast of an int to every one of `nd` spatial axes; other values are passed on unchanged."""
    return (int(value),) * nd if is_int(value) else value
