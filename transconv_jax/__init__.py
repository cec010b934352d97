"""transconv_jax: transposed convolution in JAX with PyTorch's numbers, in four equal forms.

`transconv_jax.nnx` and `transconv_jax.linen` (the Flax layers) are imported on first use.
"""

import importlib
from typing import Any

from ._conv import conv as conv
from ._convert import as_conv_transpose as as_conv_transpose
from ._convert import as_subpixel_conv as as_subpixel_conv
from ._convert import checkerboard_free as checkerboard_free
from ._convert import overlap_counts as overlap_counts
from ._dispatch import conv_transpose as conv_transpose
from ._dispatch import conv_transpose_matmul as conv_transpose_matmul
from ._dispatch import conv_transpose_scatter as conv_transpose_scatter
from ._dispatch import conv_transpose_subpixel as conv_transpose_subpixel
from ._dispatch import conv_transpose_vjp as conv_transpose_vjp
from ._interop import flax_to_torch as flax_to_torch
from ._interop import load_torch_weights as load_torch_weights
from ._interop import torch_to_flax as torch_to_flax
from ._matmul import conv_matrix as conv_matrix
from ._shuffle import pixel_shuffle as pixel_shuffle
from ._shuffle import pixel_unshuffle as pixel_unshuffle
from ._spec import DEFAULT_MATRIX_BUDGET as DEFAULT_MATRIX_BUDGET
from ._spec import conv_output_shape as conv_output_shape
from ._spec import conv_transpose_output_shape as conv_transpose_output_shape
from ._torch_io import IncompatibleKeys as IncompatibleKeys
from ._torch_io import load_torch_state_dict as load_torch_state_dict
from ._torch_io import load_torch_state_dict_linen as load_torch_state_dict_linen
from ._torch_io import torch_state_dict as torch_state_dict

__version__ = "0.1.0"

_LAZY = ("nnx", "linen")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
