"""Flax initialisers for this library's ConvTranspose kernels `(*kernel_size, in, out // groups)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax.typing import Initializer

from ._convert import tie_phases
from ._flax import default_kernel_init


def icnr(stride, base_init: Initializer = default_kernel_init) -> Initializer:
    """ICNR (Aitken et al. 2017): a kernel whose phases are equal at init, so it starts without a checkerboard.

    Draws `base_init` on the full kernel shape, then gives every tap `j s + r` the value of tap
    `j s` (`tie_phases`): each element keeps `base_init`'s distribution, and the layer starts as a
    nearest-neighbour upsampling of a stride-1 transposed convolution, so a constant input gives
    an output that is constant away from the borders. Every kernel size must be a multiple of its
    stride; the layer's dilation must be 1.

    Args:
        stride: the layer's strides, int or one int per spatial axis.
        base_init: a Flax initialiser for the full kernel shape; default PyTorch's (the layers' default).

    Returns:
        A Flax initialiser `(key, shape, dtype) -> kernel` for `kernel_init=`.

    Example:
        >>> from flax import nnx
        >>> from transconv_jax.nnx import ConvTranspose
        >>> layer = ConvTranspose(3, 4, (4, 4), strides=2, padding=1, kernel_init=icnr(2), rngs=nnx.Rngs(0))
        >>> y = layer(jnp.ones((8, 8, 3)))
        >>> bool(jnp.allclose(y[2:-2, 2:-2], y[4:5, 4:5], atol=1e-6))
        True
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return tie_phases(base_init(key, shape, dtype), stride)

    return init
