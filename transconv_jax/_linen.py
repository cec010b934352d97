"""The Linen module: `ConvTranspose` declares `kernel` and `bias`; the forward pass is `_flax`'s."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen
from flax.typing import Dtype, Initializer, PrecisionLike
from jax.typing import ArrayLike

from ._flax import (
    IntOrTuple,
    call_args,
    check_rank,
    conv_transpose_channels_last,
    default_kernel_init,
    kernel_shape,
    torch_bias_init,
)


class ConvTranspose(linen.Module):
    """Transposed convolution (Linen) with PyTorch's numbers: `torch.nn.ConvTranspose{1,2,3}d`, channels-last.

    The same layer as `transconv_jax.nnx.ConvTranspose`, with parameters `{"kernel", "bias"}` of the
    same shapes and the same numbers; `in_features` is read from the input.

    Args:
        features: output channels (`out_features` of the NNX layer).
        kernel_size: one int per spatial axis; an int means one spatial axis, as in Flax.
        strides, padding, output_padding, kernel_dilation, feature_group_count, use_bias, method,
            dtype, param_dtype, precision, kernel_init, bias_init: as for `transconv_jax.nnx.ConvTranspose`
            (PyTorch's integer padding and default initialisers; 'SAME' / 'VALID' are JAX's).

    Example:
        >>> import jax
        >>> layer = ConvTranspose(4, (3, 3), strides=2, padding=1, output_padding=1)
        >>> params = layer.init(jax.random.key(0), jnp.ones((8, 8, 3)))
        >>> params["params"]["kernel"].shape, layer.apply(params, jnp.ones((8, 8, 3))).shape
        ((3, 3, 3, 4), (16, 16, 4))
    """

    features: int
    kernel_size: IntOrTuple
    strides: IntOrTuple = 1
    padding: Any = 0
    output_padding: IntOrTuple = 0
    kernel_dilation: IntOrTuple = 1
    feature_group_count: int = 1
    use_bias: bool = True
    method: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer | None = None

    @linen.compact
    def __call__(self, x: ArrayLike, output_shape: IntOrTuple | None = None) -> jax.Array:
        """Apply the layer to `x` of shape `(*batch, *spatial, in_features)`.

        Args:
            x: channels-last input, any number of leading batch axes (or none).
            output_shape: the wanted spatial output size; picks `output_padding` for this call.

        Returns:
            `(*batch, *out_spatial, features)` in `dtype`.
        """
        x = jnp.asarray(x)
        check_rank(x, self.kernel_size)
        shape = kernel_shape(self.kernel_size, x.shape[-1], self.features, self.feature_group_count)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias_init = torch_bias_init(shape) if self.bias_init is None else self.bias_init
        bias = self.param("bias", bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        return conv_transpose_channels_last(x, kernel, bias, **call_args(self), output_shape=output_shape)


# Appended below the layers (their imports at the top are being rewritten); move up when they settle.
from ._shuffle import pixel_shuffle_channels_last  # noqa: E402


class PixelShuffle(linen.Module):
    """Depth-to-space (Linen), channels-last: the same layer as `transconv_jax.nnx.PixelShuffle`.

    Attributes:
        upscale_factor: an int (2-D, as `torch.nn.PixelShuffle`) or one int per spatial axis.

    Example:
        >>> PixelShuffle((2,)).apply({}, jnp.ones((5, 4))).shape
        (10, 2)
    """

    upscale_factor: IntOrTuple

    def __call__(self, x: ArrayLike) -> jax.Array:
        return pixel_shuffle_channels_last(x, self.upscale_factor)
