"""The Linen modules: `ConvTranspose` (Flax's fields) and `ConvTranspose{1,2,3}d` (PyTorch's); the forward pass is `_flax`'s."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen
from flax.nnx.nn.dtypes import promote_dtype as flax_promote_dtype
from flax.typing import Dtype, Initializer, PrecisionLike, PromoteDtypeFn
from jax.typing import ArrayLike

from ._flax import (
    IntOrTuple,
    check_features,
    check_rank,
    conv_transpose_channels_last,
    default_kernel_init,
    kernel_shape,
    spatial_tuple,
    torch_bias_init,
)
from ._shuffle import pixel_shuffle_channels_last


class ConvTranspose(linen.Module):
    """Transposed convolution (Linen) with PyTorch's numbers: `torch.nn.ConvTranspose{1,2,3}d`, channels-last.

    The same layer as `transconv_jax.nnx.ConvTranspose`, with parameters `{"kernel", "bias"}` of the
    same shapes and the same numbers; `in_features` is read from the input. The fields come in
    `flax.linen.ConvTranspose`'s order (`features, kernel_size, strides, padding, kernel_dilation,
    use_bias, mask, dtype, param_dtype, precision, kernel_init, bias_init`, then `promote_dtype,
    preferred_element_type`; there is no `transpose_kernel`: the kernel is always PyTorch's), so
    positional Flax code keeps its meaning; this layer's own fields come last.

    Args:
        features: output channels (`out_features` of the NNX layer).
        kernel_size: one int per spatial axis; an int means one spatial axis, as in Flax (refused on
            input of rank >= 4: use a tuple or `ConvTranspose2d`).
        strides, padding, kernel_dilation, use_bias, mask, dtype, param_dtype, precision, kernel_init,
            bias_init, promote_dtype, preferred_element_type, output_padding, feature_group_count,
            method: as for `transconv_jax.nnx.ConvTranspose` (PyTorch's integer padding and default
            initialisers; 'SAME' / 'VALID' are JAX's).

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
    kernel_dilation: IntOrTuple = 1
    use_bias: bool = True
    mask: Any = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer | None = None
    promote_dtype: PromoteDtypeFn = flax_promote_dtype
    preferred_element_type: Dtype | None = None
    output_padding: IntOrTuple = 0
    feature_group_count: int = 1
    method: str = "auto"

    @linen.compact
    def __call__(self, x: ArrayLike, output_shape: IntOrTuple | None = None) -> jax.Array:
        """Apply the layer to `x` of shape `(*batch, *spatial, in_features)`.

        Args:
            x: channels-last input, any number of leading batch axes (or none).
            output_shape: the wanted spatial output size; picks `output_padding` for this call.

        Returns:
            `(*batch, *out_spatial, features)` in `dtype`.
        """
        return forward(self, x, output_shape, None, **_fields(self))


def _fields(module: linen.Module) -> dict[str, Any]:
    return {
        f.name: getattr(module, f.name) for f in dataclasses.fields(ConvTranspose) if f.name not in ("parent", "name")
    }


def forward(module: linen.Module, x: ArrayLike, output_shape, in_features: int | None, **f: Any) -> jax.Array:
    """Declare `kernel` and `bias` on `module` and apply the transposed convolution: the body every Linen layer shares."""
    with jax.named_scope(f"transconv_jax.linen.{type(module).__name__}"):
        x = jnp.asarray(x)
        check_rank(x, f["kernel_size"])
        if in_features is not None:
            check_features(x, in_features)
        shape = kernel_shape(f["kernel_size"], x.shape[-1], f["features"], f["feature_group_count"])
        kernel = module.param("kernel", f["kernel_init"], shape, f["param_dtype"])
        bias_init = torch_bias_init(shape) if f["bias_init"] is None else f["bias_init"]
        bias = module.param("bias", bias_init, (f["features"],), f["param_dtype"]) if f["use_bias"] else None
        mask = None if f["mask"] is None else jnp.asarray(f["mask"])
        names = ("strides", "padding", "output_padding", "kernel_dilation", "feature_group_count", "method", "dtype")
        rest = {n: f[n] for n in (*names, "precision", "preferred_element_type", "promote_dtype")}
        return conv_transpose_channels_last(x, kernel, bias, mask=mask, output_shape=output_shape, **rest)


class _ConvTransposeNd(linen.Module):
    """`torch.nn.ConvTranspose{n}d`'s constructor as Linen fields: PyTorch's names and order, then keyword-only ones."""

    in_channels: int
    out_channels: int
    kernel_size: IntOrTuple
    stride: IntOrTuple = 1
    padding: Any = 0
    output_padding: IntOrTuple = 0
    groups: int = 1
    bias: bool = True
    dilation: IntOrTuple = 1
    _: dataclasses.KW_ONLY
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    method: str = "auto"
    precision: PrecisionLike = None
    preferred_element_type: Dtype | None = None
    kernel_init: Initializer = default_kernel_init
    bias_init: Initializer | None = None

    ndim = 0  # a class attribute, not a field: set by each subclass

    @linen.compact
    def __call__(self, x: ArrayLike, output_shape: IntOrTuple | None = None) -> jax.Array:
        """Apply the layer to channels-last `x` of shape `(*batch, *spatial, in_channels)`."""
        nd = self.ndim
        return forward(
            self, x, output_shape, self.in_channels, features=self.out_channels,
            kernel_size=spatial_tuple(self.kernel_size, nd), strides=spatial_tuple(self.stride, nd),
            padding=spatial_tuple(self.padding, nd), output_padding=spatial_tuple(self.output_padding, nd),
            kernel_dilation=spatial_tuple(self.dilation, nd), feature_group_count=self.groups, use_bias=self.bias,
            mask=None, dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision,
            kernel_init=self.kernel_init, bias_init=self.bias_init, promote_dtype=flax_promote_dtype,
            preferred_element_type=self.preferred_element_type, method=self.method,
        )  # fmt: skip


class ConvTranspose1d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose1d` as a Linen layer: PyTorch's constructor, input `(*batch, L, in_channels)`.

    `ConvTranspose1d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, *, dtype, param_dtype, method, precision, preferred_element_type,
    kernel_init, bias_init)`, PyTorch's init; parameters `kernel` `(k, in_channels, out_channels // groups)`
    and `bias`, as in `ConvTranspose`.

    Example:
        >>> import jax
        >>> layer = ConvTranspose1d(4, 2, 4, stride=2, padding=1)
        >>> layer.apply(layer.init(jax.random.key(0), jnp.ones((1, 3, 4))), jnp.ones((1, 3, 4))).shape
        (1, 6, 2)
    """

    ndim = 1


class ConvTranspose2d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose2d` as a Linen layer: PyTorch's constructor, input `(*batch, H, W, in_channels)`.

    Fields as `ConvTranspose1d`; ints broadcast to both spatial axes.

    Example:
        >>> import jax
        >>> layer = ConvTranspose2d(4, 2, 4, stride=2, padding=1)
        >>> layer.init(jax.random.key(0), jnp.ones((1, 3, 3, 4)))["params"]["kernel"].shape
        (4, 4, 4, 2)
    """

    ndim = 2


class ConvTranspose3d(_ConvTransposeNd):
    """`torch.nn.ConvTranspose3d` as a Linen layer: PyTorch's constructor, input `(*batch, D, H, W, in_channels)`.

    Fields as `ConvTranspose1d`; ints broadcast to the three spatial axes.

    Example:
        >>> import jax
        >>> layer = ConvTranspose3d(4, 2, 2, stride=2)
        >>> layer.apply(layer.init(jax.random.key(0), jnp.ones((2, 2, 2, 4))), jnp.ones((2, 2, 2, 4))).shape
        (4, 4, 4, 2)
    """

    ndim = 3


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
