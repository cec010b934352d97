"""The subpixel form of the transposed convolution (not implemented yet)."""

from __future__ import annotations

import jax

from ._spec import Spec


def conv_transpose_subpixel_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    raise NotImplementedError("method='subpixel' is not implemented yet")
