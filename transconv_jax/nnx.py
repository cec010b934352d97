"""Flax NNX layers with PyTorch's numbers: `from transconv_jax.nnx import ConvTranspose, PixelShuffle`."""

from ._nnx import ConvTranspose as ConvTranspose
from ._nnx import PixelShuffle as PixelShuffle
