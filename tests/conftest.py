"""Strict JAX settings for the whole suite, as in JAX's own tests."""

import jax
import torch

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
torch.set_num_threads(1)
