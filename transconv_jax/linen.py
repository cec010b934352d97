"""Flax Linen layers with PyTorch's numbers: `from transconv_jax.linen import ConvTranspose, PixelShuffle`."""

from ._linen import ConvTranspose as ConvTranspose
from ._linen import PixelShuffle as PixelShuffle
