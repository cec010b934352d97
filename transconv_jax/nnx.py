"""Flax NNX layers with PyTorch's numbers: `from transconv_jax.nnx import ConvTranspose, ConvTranspose2d, PixelShuffle`."""

from ._nnx import ConvTranspose as ConvTranspose
from ._nnx import ConvTranspose1d as ConvTranspose1d
from ._nnx import ConvTranspose2d as ConvTranspose2d
from ._nnx import ConvTranspose3d as ConvTranspose3d
from ._nnx import PixelShuffle as PixelShuffle
