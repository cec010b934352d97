"""PyTorch weights to and from the Flax modules' parameters, without importing torch.

PyTorch's `ConvTranspose{1,2,3}d` stores `weight` as `(in, out // groups, *kernel_size)`; the
modules here store `kernel` as `(*kernel_size, in, out // groups)`: the same numbers with the two
channel axes moved last, no flip. Tensors are read by duck typing (`t.detach().cpu()`), so
numpy arrays, jax arrays and torch tensors are all accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def torch_to_flax(weight: ArrayLike, bias: ArrayLike | None = None) -> dict[str, jax.Array]:
    """The modules' parameters `{"kernel", "bias"}` from a PyTorch ConvTranspose weight and bias.

    Args:
        weight: `(in, out // groups, *kernel_size)`, a torch tensor or an array.
        bias: `(out,)` or None (then the result has no "bias").

    Returns:
        `{"kernel": (*kernel_size, in, out // groups), "bias": (out,)}` as jax arrays, for
        `transconv_jax.linen.ConvTranspose` (`{"params": torch_to_flax(w, b)}`) or `load_torch_weights`.

    Example:
        >>> import numpy as np
        >>> torch_to_flax(np.zeros((8, 4, 3, 3), np.float32))["kernel"].shape
        (3, 3, 8, 4)
    """
    w = _to_numpy("weight", weight)
    if not 3 <= w.ndim <= 5:
        raise ValueError(
            f"weight has shape {w.shape}; a PyTorch ConvTranspose{{1,2,3}}d weight is (in, out // groups, "
            f"*kernel_size), rank 3, 4 or 5."
        )
    params = {"kernel": jnp.asarray(np.moveaxis(w, (0, 1), (-2, -1)))}
    if bias is not None:
        params["bias"] = jnp.asarray(_vector("bias", bias))
    return params


def flax_to_torch(params: Any) -> dict[str, np.ndarray]:
    """PyTorch's `{"weight", "bias"}` from the modules' parameters: the inverse of `torch_to_flax`.

    Args:
        params: a mapping with "kernel" (and "bias"), e.g. Linen's `variables["params"]`, or an
            NNX `ConvTranspose` layer.

    Returns:
        new numpy arrays; load them with `module.load_state_dict({k: torch.from_numpy(v) ...})`.

    Example:
        >>> import numpy as np
        >>> flax_to_torch({"kernel": np.zeros((3, 3, 8, 4), np.float32)})["weight"].shape
        (8, 4, 3, 3)
    """
    kernel, bias = _param(params, "kernel"), _param(params, "bias")
    if kernel is None:
        raise ValueError(
            f"params has no 'kernel'; give a mapping with 'kernel' (and 'bias') or a layer, got {type(params).__name__}."
        )
    k = _to_numpy("kernel", kernel)
    if not 3 <= k.ndim <= 5:
        raise ValueError(f"kernel has shape {k.shape}; it must be (*kernel_size, in, out // groups), rank 3, 4 or 5.")
    out = {"weight": np.moveaxis(k, (-2, -1), (0, 1))}
    if bias is not None:
        out["bias"] = _vector("bias", bias)
    return {name: np.array(a, copy=True) for name, a in out.items()}  # writable, contiguous: torch.from_numpy takes it


def load_torch_weights(layer: Any, weight: ArrayLike, bias: ArrayLike | None = None) -> None:
    """Copy a PyTorch ConvTranspose weight and bias into an NNX `ConvTranspose` layer, in place.

    The values are cast to the layer's parameter dtype; shapes must match exactly.

    Args:
        layer: a `transconv_jax.nnx.ConvTranspose`.
        weight: `(in, out // groups, *kernel_size)`, a torch tensor or an array.
        bias: `(out,)`; required when the layer has a bias, refused when it has none.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from transconv_jax.nnx import ConvTranspose
        >>> layer = ConvTranspose(2, 3, (2, 2), rngs=nnx.Rngs(0))
        >>> load_torch_weights(layer, np.ones((2, 3, 2, 2), np.float32), np.zeros(3, np.float32))
        >>> float(layer.kernel[...].sum())
        24.0
    """
    params = torch_to_flax(weight, bias)
    if (layer.bias is None) != (bias is None):
        raise ValueError(
            f"the layer {'has no' if layer.bias is None else 'has a'} bias but bias is "
            f"{'given' if bias is not None else 'None'}; set use_bias={bias is not None} to match the PyTorch module."
        )
    for name, value in params.items():
        var = getattr(layer, name)
        if value.shape != var.shape:
            raise ValueError(
                f"PyTorch's {'weight' if name == 'kernel' else 'bias'} becomes {name} of shape {value.shape}, "
                f"but the layer's {name} has shape {var.shape}; build the layer with the PyTorch module's "
                f"in/out channels, kernel_size and groups."
            )
        var[...] = value.astype(var.dtype)


def _to_numpy(name: str, a: Any) -> np.ndarray:
    """A numpy array from a torch tensor (duck-typed, bfloat16 kept), a jax array or an array-like."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":
            return np.asarray(a.float()).astype(jnp.bfloat16)
    out = np.asarray(a)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{name} has dtype {out.dtype}; PyTorch ConvTranspose weights are floating point.")
    return out


def _vector(name: str, a: Any) -> np.ndarray:
    v = _to_numpy(name, a)
    if v.ndim != 1:
        raise ValueError(f"{name} has shape {v.shape}; a ConvTranspose bias is a vector (out,).")
    return v


def _param(params: Any, name: str) -> Any:
    value = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
    return value[...] if hasattr(value, "get_value") else value
