"""Flax Linen layers with PyTorch's numbers: `from transconv_jax.linen import ConvTranspose`."""

from ._linen import ConvTranspose as ConvTranspose
