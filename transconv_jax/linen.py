"""Flax Linen layers with PyTorch's numbers: `from transconv_jax.linen import ConvTranspose, ConvTranspose2d, PixelShuffle`."""

from ._linen import ConvTranspose as ConvTranspose
from ._linen import ConvTranspose1d as ConvTranspose1d
from ._linen import ConvTranspose2d as ConvTranspose2d
from ._linen import ConvTranspose3d as ConvTranspose3d
from ._linen import PixelShuffle as PixelShuffle
