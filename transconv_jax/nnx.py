"""Flax NNX layers with PyTorch's numbers: `from transconv_jax.nnx import ConvTranspose`."""

from ._nnx import ConvTranspose as ConvTranspose
