"""The matmul form of the transposed convolution (not implemented yet)."""

from __future__ import annotations

import jax

from ._spec import Spec


def conv_transpose_matmul_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    raise NotImplementedError("method='matmul' is not implemented yet")
