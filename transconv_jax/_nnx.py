"""The NNX module: `ConvTranspose` holds `kernel` and `bias`; the forward pass is `_flax`'s."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike
from jax.typing import ArrayLike

from ._flax import (
    IntOrTuple,
    call_args,
    check_features,
    check_rank,
    conv_transpose_channels_last,
    default_kernel_init,
    kernel_shape,
    torch_bias_init,
)


class ConvTranspose(nnx.Module):
    """Transposed convolution (NNX) with PyTorch's numbers: `torch.nn.ConvTranspose{1,2,3}d`, channels-last.

    The kernel `(*kernel_size, in_features, out_features // groups)` is PyTorch's weight
    `(in, out // groups, *kernel_size)` with its channel axes moved last (`torch_to_flax` converts).
    Note that this differs from `flax.nnx.ConvTranspose`: an integer `padding` crops the output as
    in PyTorch, the kernel is never flipped by the caller, and `output_padding` and groups exist.

    Args:
        in_features: input channels (the last input axis).
        out_features: output channels.
        kernel_size: one int per spatial axis; an int means one spatial axis, as in Flax.
        strides: int or one int per spatial axis.
        padding: PyTorch's int padding (per axis or one for all), `(low, high)` pairs, or
            'SAME' / 'VALID' as `jax.lax.conv_transpose(..., transpose_kernel=True)` means them.
        output_padding: int or one per axis, added to the end of the output (PyTorch's).
        kernel_dilation: int or one int per axis.
        feature_group_count: channel groups; must divide `in_features` and `out_features`.
        use_bias: add a bias `(out_features,)`.
        method: the form of `conv_transpose`: 'auto', 'vjp', 'matmul', 'scatter' or 'subpixel'.
        dtype: the computation dtype; input, kernel and bias are cast to it (None: promote them).
        param_dtype: the parameters' dtype.
        precision: passed to `jax.lax`.
        kernel_init: default PyTorch's, uniform in `+-1/sqrt(fan_in)`,
            `fan_in = (out_features // groups) * prod(kernel_size)`.
        bias_init: None (default) for PyTorch's, uniform with the same bound; else a Flax initialiser.
        rngs: the `nnx.Rngs` that draw the parameters.

    Example:
        >>> from flax import nnx
        >>> layer = ConvTranspose(3, 4, (3, 3), strides=2, padding=1, output_padding=1, rngs=nnx.Rngs(0))
        >>> layer.kernel.shape
        (3, 3, 3, 4)
        >>> layer(jnp.ones((2, 8, 8, 3))).shape
        (2, 16, 16, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: IntOrTuple,
        strides: IntOrTuple = 1,
        padding: Any = 0,
        output_padding: IntOrTuple = 0,
        kernel_dilation: IntOrTuple = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        method: str = "auto",
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        shape = kernel_shape(kernel_size, in_features, out_features, feature_group_count)
        self.kernel_size, self.in_features, self.out_features = shape[:-2], in_features, out_features
        self.strides, self.padding, self.output_padding = strides, padding, output_padding
        self.kernel_dilation, self.feature_group_count, self.method = kernel_dilation, feature_group_count, method
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        bias_init = torch_bias_init(shape) if bias_init is None else bias_init
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else nnx.data(None)

    def __call__(self, x: ArrayLike, output_shape: IntOrTuple | None = None) -> jax.Array:
        """Apply the layer to `x` of shape `(*batch, *spatial, in_features)`.

        Args:
            x: channels-last input, any number of leading batch axes (or none).
            output_shape: the wanted spatial output size; picks `output_padding` for this call.

        Returns:
            `(*batch, *out_spatial, out_features)` in `dtype`.
        """
        x = jnp.asarray(x)
        check_rank(x, self.kernel_size)
        check_features(x, self.in_features)
        bias = None if self.bias is None else self.bias[...]
        return conv_transpose_channels_last(x, self.kernel[...], bias, **call_args(self), output_shape=output_shape)


# Appended below the layers (their imports at the top are being rewritten); move up when they settle.
from ._shuffle import pixel_shuffle_channels_last  # noqa: E402


class PixelShuffle(nnx.Module):
    """Depth-to-space (NNX), channels-last: `torch.nn.PixelShuffle` with PyTorch's channel order.

    `(*batch, *spatial, C * prod(r))` to `(*batch, *(spatial * r), C)`; output channel `c` at offset
    `i` inside each block is input channel `c * prod(r) + ravel(i)`, as in PyTorch. Note that an int
    factor means two spatial axes, as in `torch.nn.PixelShuffle` (not one, as `kernel_size` does):
    give a tuple, one factor per spatial axis, for 1-D or 3-D.

    Args:
        upscale_factor: an int (2-D) or one int per spatial axis.

    Example:
        >>> PixelShuffle(2)(jnp.ones((5, 3, 4, 8))).shape
        (5, 6, 8, 2)
    """

    def __init__(self, upscale_factor: IntOrTuple):
        self.upscale_factor = upscale_factor

    def __call__(self, x: ArrayLike) -> jax.Array:
        return pixel_shuffle_channels_last(x, self.upscale_factor)
