"""PyTorch weights to and from Flax parameters, one layer at a time, without importing torch.

PyTorch's `ConvTranspose{1,2,3}d` stores `weight` as `(in, out // groups, *kernel_size)`; this
library's layers store `kernel` as `(*kernel_size, in, out // groups)`: the same numbers with the two
channel axes moved last, no flip. A `Conv{1,2,3}d` weight is `(out, in // groups, *kernel_size)` and
Flax's `Conv` kernel `(*kernel_size, in // groups, out)`; a `Linear` weight `(out, in)` is Flax's
`(in, out)`. Conv and ConvTranspose weights of square shape look alike, so every converter is told
which it has: by the torch module itself (its class name is read; torch is never imported) or by
`kind="conv_transpose" | "conv" | "linear"`. Tensors are read by duck typing
(`t.detach().cpu().numpy()`), so numpy arrays, jax arrays and torch tensors are all accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Kind = Literal["conv_transpose", "conv", "linear"]
KINDS = ("conv_transpose", "conv", "linear")
_RANKS = {"conv_transpose": (3, 4, 5), "conv": (3, 4, 5), "linear": (2,)}
_LAYOUT = {
    "conv_transpose": "(in, out // groups, *kernel_size)",
    "conv": "(out, in // groups, *kernel_size)",
    "linear": "(out, in)",
}


def kind_of_torch_module(module: Any) -> Kind | None:
    """The kind of a torch module from its class name ('ConvTranspose2d' -> 'conv_transpose'), or None."""
    name = type(module).__name__
    if re.fullmatch(r"(Lazy)?ConvTranspose[123]d", name):
        return "conv_transpose"
    if re.fullmatch(r"(Lazy)?Conv[123]d", name):
        return "conv"
    if re.fullmatch(r"(Lazy)?Linear", name):
        return "linear"
    return None


def to_kernel(kind: Kind, weight: np.ndarray) -> np.ndarray:
    """PyTorch's weight of a layer of `kind` as the Flax kernel (axes moved, no copy)."""
    if kind == "conv_transpose":
        return np.moveaxis(weight, (0, 1), (-2, -1))
    return np.moveaxis(weight, (0, 1), (-1, -2))  # conv: (O, I/g, *k) -> (*k, I/g, O); linear: (O, I) -> (I, O)


def from_kernel(kind: Kind, kernel: np.ndarray) -> np.ndarray:
    """The inverse of `to_kernel`: a Flax kernel as PyTorch's weight."""
    if kind == "conv_transpose":
        return np.moveaxis(kernel, (-2, -1), (0, 1))
    return np.moveaxis(kernel, (-1, -2), (0, 1))


def torch_to_flax(weight: Any, bias: ArrayLike | None = None, *, kind: Kind | None = None) -> dict[str, jax.Array]:
    """Flax's parameters `{"kernel", "bias"}` from a torch module, or from its weight and bias with `kind=`.

    Args:
        weight: a torch `ConvTranspose{1,2,3}d`, `Conv{1,2,3}d` or `Linear` module (its class says which;
            its bias is taken too), or a weight array or tensor, which needs `kind`.
        bias: `(out,)` or None (then the result has no "bias"); only with a weight array.
        kind: 'conv_transpose' (weight `(in, out // groups, *k)`), 'conv' (`(out, in // groups, *k)`) or
            'linear' (`(out, in)`); required for an array, checked against a module's class.

    Returns:
        `{"kernel", "bias"}` as jax arrays: a ConvTranspose kernel `(*k, in, out // groups)` for this
        library's layers, a Conv kernel `(*k, in // groups, out)` or a Linear kernel `(in, out)` for Flax's.

    Example:
        >>> import numpy as np
        >>> torch_to_flax(np.zeros((8, 4, 3, 3), np.float32), kind="conv_transpose")["kernel"].shape
        (3, 3, 8, 4)
    """
    kind, weight, bias = _resolve(weight, bias, kind)
    w = _to_numpy("weight", weight)
    if w.ndim not in _RANKS[kind]:
        raise ValueError(
            f"weight has shape {w.shape}; a PyTorch {_torch_name(kind)} weight is {_LAYOUT[kind]}, rank "
            f"{' or '.join(map(str, _RANKS[kind]))}."
        )
    params = {"kernel": jnp.asarray(to_kernel(kind, w))}
    if bias is not None:
        params["bias"] = jnp.asarray(_vector("bias", bias))
    return params


def flax_to_torch(params: Any, *, kind: Kind | None = None) -> dict[str, np.ndarray]:
    """PyTorch's `{"weight", "bias"}` from Flax's parameters: the inverse of `torch_to_flax`.

    Args:
        params: an NNX layer (this library's ConvTranspose layers, `nnx.Conv`, `nnx.Linear`), or a
            mapping with "kernel" (and "bias"), e.g. Linen's `variables["params"]["up1"]`, which needs `kind`.
        kind: 'conv_transpose', 'conv' or 'linear'; required for a mapping, checked against a layer.

    Returns:
        new numpy arrays; load them with `module.load_state_dict({k: torch.from_numpy(v) ...})`.

    Example:
        >>> import numpy as np
        >>> flax_to_torch({"kernel": np.zeros((3, 3, 8, 4), np.float32)}, kind="conv_transpose")["weight"].shape
        (8, 4, 3, 3)
    """
    kind = _layer_kind(params, kind)
    kernel, bias = _param(params, "kernel"), _param(params, "bias")
    if kernel is None:
        raise ValueError(
            f"params has no 'kernel'; give a mapping with 'kernel' (and 'bias') or a layer, got {type(params).__name__}."
        )
    k = _to_numpy("kernel", kernel)
    if k.ndim not in _RANKS[kind]:
        raise ValueError(f"kernel has shape {k.shape}; a {kind} kernel has rank {' or '.join(map(str, _RANKS[kind]))}.")
    out = {"weight": from_kernel(kind, k)}
    if bias is not None:
        out["bias"] = _vector("bias", bias)
    return {name: np.array(a, copy=True) for name, a in out.items()}  # writable, contiguous: torch.from_numpy takes it


def load_torch_weights(layer: Any, weight: Any, bias: ArrayLike | None = None, *, kind: Kind | None = None) -> None:
    """Copy a torch module's weight and bias (or a weight array with `kind=`) into an NNX layer, in place.

    The values are cast to the layer's parameter dtype; shapes must match exactly. A torch module of
    another kind than the layer (a `Conv2d` into a `ConvTranspose`) is refused. For a whole model use
    `load_torch_state_dict`.

    Args:
        layer: this library's NNX `ConvTranspose` (or `ConvTranspose{1,2,3}d`), `nnx.Conv` or `nnx.Linear`.
        weight: the torch module itself, or its weight (then `kind` is required).
        bias: `(out,)` with a weight array; required when the layer has a bias, refused when it has none.
        kind: 'conv_transpose', 'conv' or 'linear': what `weight` is; must be the layer's kind.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from transconv_jax.nnx import ConvTranspose
        >>> layer = ConvTranspose(2, 3, (2, 2), rngs=nnx.Rngs(0))
        >>> w, b = np.ones((2, 3, 2, 2), np.float32), np.zeros(3, np.float32)
        >>> load_torch_weights(layer, w, b, kind="conv_transpose")
        >>> float(layer.kernel[...].sum())
        24.0
    """
    kind, weight, bias = _resolve(weight, bias, kind)
    layer_kind = _layer_kind(layer, None)
    if kind != layer_kind:
        raise ValueError(
            f"kind={kind!r} (a PyTorch {_torch_name(kind)} weight, {_LAYOUT[kind]}) cannot load into "
            f"{type(layer).__name__}, a {layer_kind} layer; load a {_torch_name(layer_kind)} into it."
        )
    params = torch_to_flax(weight, bias, kind=kind)
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
        var.set_value(value.astype(var.dtype))


def _resolve(weight: Any, bias: Any, kind: Kind | None) -> tuple[Kind, Any, Any]:
    """(kind, weight, bias) from a torch module or from an array with `kind`, every misuse refused."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}.")
    if isinstance(weight, Mapping):
        raise TypeError(
            f"weight is a mapping with keys {list(weight)[:4]}...; for a whole state_dict use "
            "load_torch_state_dict(model, state_dict), for one layer give its module or its weight with kind=."
        )
    if not hasattr(weight, "weight"):
        if kind is None:
            raise TypeError(
                f"weight is a bare array of shape {tuple(np.shape(weight))}, and a Conv weight (out, in // groups, *k) "
                "looks like a ConvTranspose weight (in, out // groups, *k); pass the torch module itself, or say "
                "what it is with kind='conv_transpose', 'conv' or 'linear'."
            )
        return kind, weight, bias
    module_kind = kind_of_torch_module(weight)
    if module_kind is None:
        raise TypeError(
            f"weight is a {type(weight).__name__}, not a torch ConvTranspose{{1,2,3}}d, Conv{{1,2,3}}d or Linear "
            "module; pass one of those, or its weight array with kind=."
        )
    if kind is not None and kind != module_kind:
        raise ValueError(
            f"kind={kind!r} but the module is a {type(weight).__name__}, whose weight is {_LAYOUT[module_kind]}; "
            f"drop kind= or pass kind={module_kind!r}."
        )
    if bias is not None:
        raise ValueError("bias is given with a torch module, which brings its own; pass bias=None.")
    return module_kind, weight.weight, weight.bias


def _layer_kind(layer: Any, kind: Kind | None) -> Kind:
    """The kind of an NNX layer by its class (no Flax import), checked against `kind`; `kind` for a mapping."""
    if isinstance(layer, Mapping):
        if kind is None:
            raise TypeError(
                "params is a mapping, which does not say whether its kernel is a ConvTranspose, Conv or Linear "
                "one; pass kind='conv_transpose', 'conv' or 'linear'."
            )
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {KINDS}.")
        return kind
    names = {(c.__module__.split(".")[0], c.__name__) for c in type(layer).__mro__}
    found: Kind | None = None
    if ("transconv_jax", "ConvTranspose") in names:
        found = "conv_transpose"
    elif ("flax", "Conv") in names:
        found = "conv"
    elif ("flax", "Linear") in names:
        found = "linear"
    if found is None:
        raise TypeError(
            f"layer is a {type(layer).__name__}; give this library's ConvTranspose layer, flax.nnx.Conv or "
            "flax.nnx.Linear (flax.nnx.ConvTranspose's kernel is not PyTorch's)."
        )
    if kind is not None and kind != found:
        raise ValueError(f"kind={kind!r} but the layer is a {type(layer).__name__}, a {found} layer.")
    return found


def _torch_name(kind: Kind) -> str:
    return {"conv_transpose": "ConvTranspose{1,2,3}d", "conv": "Conv{1,2,3}d", "linear": "Linear"}[kind]


def to_numpy(name: str, a: Any) -> np.ndarray:
    """A numpy array from a torch tensor (duck-typed, bfloat16 kept), a jax array or an array-like."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":
            return a.float().numpy().astype(jnp.bfloat16)
        return a.numpy()
    return np.asarray(a)


def _to_numpy(name: str, a: Any) -> np.ndarray:
    out = to_numpy(name, a)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{name} has dtype {out.dtype}; PyTorch weights are floating point.")
    return out


def _vector(name: str, a: Any) -> np.ndarray:
    v = _to_numpy(name, a)
    if v.ndim != 1:
        raise ValueError(f"{name} has shape {v.shape}; a bias is a vector (out,).")
    return v


def _param(params: Any, name: str) -> Any:
    value = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
    return value[...] if hasattr(value, "get_value") else value
