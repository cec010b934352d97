"""The NNX modules: `ConvTranspose` (Flax's names) and `ConvTranspose{1,2,3}d` (PyTorch's); the forward pass is `_flax`'s."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype as flax_promote_dtype
from flax.typing import Dtype, Initializer, PrecisionLike, PromoteDtypeFn
from jax.typing import ArrayLike

from ._flax import (
    IntOrTuple,
    call_args,
    check_features,
    check_rank,
    conv_transpose_channels_last,
    default_kernel_init,
    kernel_shape,
    spatial_tuple,
    torch_bias_init,
)
from ._shuffle import pixel_shuffle_channels_last

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ConvTranspose(nnx.Module):
    """Transposed convolution (NNX) with PyTorch's numbers: `torch.nn.ConvTranspose{1,2,3}d`, channels-last.

    The kernel `(*kernel_size, in_features, out_features // groups)` is PyTorch's weight
    `(in, out // groups, *kernel_size)` with its channel axes moved last (`load_torch_state_dict`
    converts). Note that this differs from `flax.nnx.ConvTranspose`: an integer `padding` crops the
    output as in PyTorch, the kernel is never flipped by the caller, and `output_padding` and groups
    exist. Flax's conventions otherwise: everything after `strides` is keyword-only.

    Args:
        in_features: input channels (the last input axis).
        out_features: output channels.
        kernel_size: one int per spatial axis; an int means one spatial axis, as in Flax (refused on
            input of rank >= 4: use a tuple or `ConvTranspose2d`).
        strides: int or one int per spatial axis.
        padding: PyTorch's int padding (per axis or one for all), `(low, high)` pairs, or
            'SAME' / 'VALID' as `jax.lax.conv_transpose(..., transpose_kernel=True)` means them.
        output_padding: int or one per axis, added to the end of the output (PyTorch's).
        kernel_dilation: int or one int per axis.
        feature_group_count: channel groups; must divide `in_features` and `out_features`.
        use_bias: add a bias `(out_features,)`.
        mask: None or an array of the kernel's shape that multiplies the kernel (as in Flax).
        dtype: the computation dtype; input, kernel and bias are cast to it (None: promote them).
        param_dtype: the parameters' dtype.
        precision: passed to `jax.lax`.
        kernel_init: default PyTorch's, uniform in `+-1/sqrt(fan_in)`,
            `fan_in = (out_features // groups) * prod(kernel_size)`.
        bias_init: None (default) for PyTorch's, uniform with the same bound; else a Flax initialiser.
        promote_dtype: Flax's dtype promotion function `((x, kernel, bias), dtype=) -> (x, kernel, bias)`.
        preferred_element_type: the accumulation dtype, also the result's (as in `jax.lax`).
        method: the form of `conv_transpose`: 'auto', 'vjp', 'matmul', 'scatter' or 'subpixel'.
        rngs: the `nnx.Rngs` that draw the parameters.
        kernel_metadata, bias_metadata: metadata of the `nnx.Param`s, e.g.
            `{"sharding_names": (None, None, None, "model")}` to shard the output channels.

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
        *,
        padding: Any = 0,
        output_padding: IntOrTuple = 0,
        kernel_dilation: IntOrTuple = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        mask: ArrayLike | None = None,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer | None = None,
        promote_dtype: PromoteDtypeFn = flax_promote_dtype,
        preferred_element_type: Dtype | None = None,
        method: str = "auto",
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = _EMPTY,
        bias_metadata: Mapping[str, Any] = _EMPTY,
    ):
        shape = kernel_shape(kernel_size, in_features, out_features, feature_group_count)
        self.kernel_size, self.in_features, self.out_features = kernel_size, in_features, out_features
        self.strides, self.padding, self.output_padding = strides, padding, output_padding
        self.kernel_dilation, self.feature_group_count, self.method = kernel_dilation, feature_group_count, method
        self.mask = None if mask is None else nnx.data(jnp.asarray(mask))
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.promote_dtype, self.preferred_element_type = promote_dtype, preferred_element_type
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype), **kernel_metadata)
        bias_init = torch_bias_init(shape) if bias_init is None else bias_init
        self.bias = (
            nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata)
            if use_bias
            else nnx.data(None)
        )

    def __call__(self, x: ArrayLike, output_shape: IntOrTuple | None = None) -> jax.Array:
        """Apply the layer to `x` of shape `(*batch, *spatial, in_features)`.

        Args:
            x: channels-last input, any number of leading batch axes (or none).
            output_shape: the wanted spatial output size; picks `output_padding` for this call.

        Returns:
            `(*batch, *out_spatial, out_features)` in `dtype`.
        """
        with jax.named_scope(f"transconv_jax.nnx.{type(self).__name__}"):
            x = jnp.asarray(x)
            check_rank(x, self.kernel_size)
            check_features(x, self.in_features)
            bias = None if self.bias is None else self.bias[...]
            kernel = self.kernel[...]
            return conv_transpose_channels_last(x, kernel, bias, **call_args(self), output_shape=output_shape)


class _ConvTransposeNd(ConvTranspose):
    """`torch.nn.ConvTranspose{n}d`'s constructor over `ConvTranspose`: PyTorch's names and order."""

    ndim: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: Any = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        method: str = "auto",
        precision: PrecisionLike = None,
        preferred_element_type: Dtype | None = None,
        kernel_init: Initializer = default_kernel_init,
        bias_init: Initializer | None = None,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = _EMPTY,
        bias_metadata: Mapping[str, Any] = _EMPTY,
    ):
        nd = self.ndim
        super().__init__(
            in_channels, out_channels, spatial_tuple(kernel_size, nd), spatial_tuple(stride, nd),
            padding=spatial_tuple(padding, nd), output_padding=spatial_tuple(output_padding, nd),
            kernel_dilation=spatial_tuple(dilation, nd), feature_group_count=groups, use_bias=bias, dtype=dtype,
            param_dtype=param_dtype, precision=precision, kernel_init=kernel_init, bias_init=bias_init,
            preferred_element_type=preferred_element_type, method=method, rngs=rngs,
            kernel_metadata=kernel_metadata, bias_metadata=bias_metadata,
        )  # fmt: skip


class ConvTranspose1d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose1d` as an NNX layer: PyTorch's constructor, input `(*batch, L, in_channels)`.

    `ConvTranspose1d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, *, dtype, param_dtype, method, precision, preferred_element_type,
    kernel_init, bias_init, rngs, kernel_metadata, bias_metadata)`, PyTorch's init. Parameters: `kernel`
    `(k, in_channels, out_channels // groups)` and `bias`, as in `ConvTranspose`.

    Example:
        >>> from flax import nnx
        >>> ConvTranspose1d(4, 2, 4, stride=2, padding=1, rngs=nnx.Rngs(0))(jnp.ones((1, 3, 4))).shape
        (1, 6, 2)
    """

    ndim = 1


class ConvTranspose2d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose2d` as an NNX layer: PyTorch's constructor, input `(*batch, H, W, in_channels)`.

    `ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, *, dtype, ...)` as `ConvTranspose1d`; ints broadcast to both axes.
    Parameters: `kernel` `(kH, kW, in_channels, out_channels // groups)` and `bias`.

    Example:
        >>> from flax import nnx
        >>> ConvTranspose2d(4, 2, 4, stride=2, padding=1, rngs=nnx.Rngs(0))(jnp.ones((1, 3, 3, 4))).shape
        (1, 6, 6, 2)
    """

    ndim = 2


class ConvTranspose3d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose3d` as an NNX layer: PyTorch's constructor, input `(*batch, D, H, W, in_channels)`.

    `ConvTranspose3d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, *, dtype, ...)` as `ConvTranspose1d`; ints broadcast to the three axes.
    Parameters: `kernel` `(kD, kH, kW, in_channels, out_channels // groups)` and `bias`.

    Example:
        >>> from flax import nnx
        >>> ConvTranspose3d(4, 2, 2, stride=2, rngs=nnx.Rngs(0))(jnp.ones((1, 2, 2, 2, 4))).shape
        (1, 4, 4, 4, 2)
    """

    ndim = 3


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
