"""The scatter form of the transposed convolution (not implemented yet)."""

from __future__ import annotations

import jax

from ._spec import Spec


def conv_transpose_scatter_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    raise NotImplementedError("method='scatter' is not implemented yet")
