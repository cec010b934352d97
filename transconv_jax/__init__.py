"""transconv_jax: transposed convolution in JAX with PyTorch's numbers, in four equal forms."""

from ._conv import conv as conv
from ._dispatch import conv_transpose as conv_transpose
from ._dispatch import conv_transpose_matmul as conv_transpose_matmul
from ._dispatch import conv_transpose_scatter as conv_transpose_scatter
from ._dispatch import conv_transpose_subpixel as conv_transpose_subpixel
from ._dispatch import conv_transpose_vjp as conv_transpose_vjp
from ._interop import flax_to_torch as flax_to_torch
from ._interop import load_torch_weights as load_torch_weights
from ._interop import torch_to_flax as torch_to_flax
from ._matmul import conv_matrix as conv_matrix
from ._matmul import set_matrix_budget as set_matrix_budget
from ._spec import conv_output_shape as conv_output_shape
from ._spec import conv_transpose_output_shape as conv_transpose_output_shape

__version__ = "0.1.0"
