"""Whole PyTorch `state_dict`s into Flax models (NNX in place, Linen as new variables) and back, without torch.

Each layer of the model names the PyTorch keys it takes, at the PyTorch module path of the layer:
attribute names joined by dots, the items of `nnx.Sequential` and `nnx.List` by index (so
`self.up = nnx.Sequential(...)` is PyTorch's `up.0`, `up.1`, ...). Per layer:

| Flax layer | PyTorch keys -> Flax variables |
| --- | --- |
| this library's `ConvTranspose*` | `weight (in, out/g, *k)` -> `kernel (*k, in, out/g)`, `bias` |
| `nnx.Conv` / `linen.Conv` | `weight (out, in/g, *k)` -> `kernel (*k, in/g, out)`, `bias` |
| `nnx.Linear` / `linen.Dense` | `weight (out, in)` -> `kernel (in, out)`, `bias` |
| `nnx.BatchNorm` / `linen.BatchNorm` | `weight, bias, running_mean, running_var` -> `scale, bias, mean, var` (`num_batches_tracked` ignored) |
| `nnx.LayerNorm`, `nnx.GroupNorm` | `weight, bias` -> `scale, bias` |
| `nnx.PReLU` | `weight (1,)` -> `negative_slope ()` |
| `nnx.Embed` | `weight` -> `embedding` |
| any other module | its own `nnx.Param` / `nnx.BatchStat` attributes, by name, unchanged |

A weight_norm'ed layer's `weight_g`/`weight_v` (or `parametrizations.weight.original0/1`) are folded
into its weight, `g * v / ||v||`, the norm taken over the axes where `g` has size 1 (all but PyTorch's
`dim`, 0 by default). Tensors are read by duck typing (`t.detach().cpu().numpy()`, bfloat16 kept).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._interop import from_kernel, kind_of_torch_module, to_kernel, to_numpy
from ._nnx import ConvTranspose

KeyMap = Mapping[str, str] | Callable[[str], str | None] | None


class IncompatibleKeys(NamedTuple):
    """What did not load, as PyTorch's `load_state_dict(strict=False)` reports it, plus shape mismatches."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[str]


@dataclasses.dataclass
class Slot:
    """One PyTorch key of one layer: where its value goes, how it converts, and how to read it back."""

    key: str
    where: str
    how: str  # "conv_transpose", "conv", "linear" (kernels), "prelu" ((1,) <-> ()), or "same"
    shape: tuple[int, ...]
    dtype: Any
    put: Callable[[Any], None]
    get: Callable[[], Any]


_NORM = {"weight": "scale", "bias": "bias"}
_BATCH_NORM = {**_NORM, "running_mean": "mean", "running_var": "var"}
_WEIGHT_NORM = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def load_torch_state_dict(model: nnx.Module, state_dict: Any, *, strict: bool = True, key_map: KeyMap = None):
    """Fill an NNX model in place from a PyTorch `state_dict` (or the torch module itself), in one call.

    Works on a model built abstractly, `nnx.eval_shape(lambda: Model(..., rngs=nnx.Rngs(0)))`: its
    `ShapeDtypeStruct`s are replaced by arrays, so no initialiser is compiled. Values are cast to each
    variable's dtype and placed with its sharding (for a model built under `jax.set_mesh(mesh)` with
    `kernel_metadata={"sharding_names": ...}`, load under the same mesh). Nothing is loaded when `strict=True` and something does not fit.

    Args:
        model: the NNX model; its layers are matched by their PyTorch module paths (see the module docstring).
        state_dict: a mapping from PyTorch keys to tensors or arrays, or the torch module itself (then
            each layer's class is checked as well: a `Conv2d` cannot fill a `ConvTranspose`).
        strict: raise one `ValueError` listing every missing, unexpected and mismatched key; with False,
            load what fits and return the lists.
        key_map: renames PyTorch keys to the model's paths: a dict of prefixes ending at a dot
            (`{"decoder": ""}` drops `decoder.`, `{"ups": "up"}` renames; the longest match applies) or a callable `key -> key`
            (None drops the key).

    Returns:
        `IncompatibleKeys(missing_keys, unexpected_keys, mismatched_keys)`, all empty when everything fits.

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> model = nnx.eval_shape(lambda: nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0))))
        >>> load_torch_state_dict(model, {"0.weight": np.ones((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)})
        IncompatibleKeys(missing_keys=[], unexpected_keys=[], mismatched_keys=[])
        >>> model.layers[0].kernel.shape
        (3, 2)
    """
    state, kinds = _source(state_dict)
    return _load(_nnx_slots(model), _rename(state, key_map), _rename(kinds, key_map), strict)


def torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The PyTorch `state_dict` of an NNX model, as numpy arrays: the inverse of `load_torch_state_dict`.

    Weights come out plain (`weight`, not weight_norm's `weight_g`/`weight_v`); a BatchNorm's
    `num_batches_tracked` comes out as 0. Load it with
    `module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})`.

    Example:
        >>> from flax import nnx
        >>> sd = torch_state_dict(nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0))))
        >>> {k: v.shape for k, v in sd.items()}
        {'0.weight': (2, 3), '0.bias': (2,)}
    """
    out = {}
    for slot in _nnx_slots(model):
        value = to_numpy(slot.key, slot.get())
        out[slot.key] = np.array(_unconvert(slot, value), copy=True)
        if slot.key.endswith("running_var"):
            out[slot.key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


def load_torch_state_dict_linen(
    variables: Mapping[str, Any],
    state_dict: Any,
    *,
    strict: bool = True,
    key_map: KeyMap = None,
    kinds: Mapping[str, str] | None = None,
):
    """New Linen variables (or params) with a PyTorch `state_dict`'s values: Conv, Dense, BatchNorm, ConvTranspose.

    A Linen params tree does not say which module made it, so each layer's kind comes from `kinds`
    (`{"up1": "conv_transpose"}`, by dotted path), else from Linen's automatic name (`Conv_0`, `Dense_1`,
    `BatchNorm_0`, `ConvTranspose_2` and `ConvTranspose2d_0` meaning this library's layers), else from
    its variables (`mean`/`var`: BatchNorm; `scale`: a norm; a rank-2 kernel: Dense); a rank >= 3
    kernel with none of these is refused, since Conv and ConvTranspose kernels look alike.

    Args:
        variables: `{"params": ..., "batch_stats": ...}` (e.g. `jax.eval_shape(module.init, ...)`), or params alone.
        state_dict, strict, key_map: as for `load_torch_state_dict`; PyTorch keys are matched to the
            Linen paths joined by dots (`Conv_0.weight`), so `key_map` usually renames.
        kinds: `{"dotted.path": "conv_transpose" | "conv" | "linear" | "norm" | "batch_norm"}`.

    Returns:
        `(new_variables, IncompatibleKeys)`; the new variables have the structure of `variables`.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from flax import linen
        >>> model = linen.Sequential([linen.Dense(2)])  # PyTorch: nn.Sequential(nn.Linear(3, 2))
        >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 3)))
        >>> sd = {"0.weight": np.ones((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)}
        >>> new, _ = load_torch_state_dict_linen(variables, sd, key_map=lambda k: "layers_" + k)
        >>> new["params"]["layers_0"]["kernel"].shape
        (3, 2)
    """
    state, torch_kinds = _source(state_dict)
    bare = "params" not in variables
    tree = _unfreeze({"params": variables} if bare else variables)
    slots = _linen_slots(tree, dict(kinds or {}))
    missing = _load(slots, _rename(state, key_map), _rename(torch_kinds, key_map), strict)
    return (tree["params"] if bare else tree), missing


# ------------------------------------------------------------------------------------ matching


def _load(slots: list[Slot], state: dict[str, Any], torch_kinds: dict[str, str], strict: bool) -> IncompatibleKeys:
    missing, mismatched, consumed, puts = [], [], set(), []
    for slot in slots:
        found = _fetch(slot.key, state)
        if found is None:
            missing.append(slot.key)
            continue
        keys, value = found
        consumed.update(keys)
        module = slot.key.rsplit(".", 1)[0] if "." in slot.key else ""
        torch_kind = torch_kinds.get(module)
        if slot.how in ("conv_transpose", "conv", "linear") and torch_kind and torch_kind != slot.how:
            mismatched.append(
                f"{slot.key}: the PyTorch module is a {torch_kind} layer but {slot.where} is a {slot.how} layer's"
            )
            continue
        converted = _convert(slot, value)
        if converted.shape != slot.shape:
            mismatched.append(
                f"{slot.key}: PyTorch's {tuple(value.shape)} becomes {converted.shape} as {slot.how} but "
                f"{slot.where} is {slot.shape}"
            )
            continue
        puts.append((slot, converted))
    batch_norms = {s.key.removesuffix("running_var") for s in slots if s.key.endswith("running_var")}
    ignored = {f"{prefix}num_batches_tracked" for prefix in batch_norms}  # PyTorch's counter; Flax has none
    unexpected = [k for k in state if k not in consumed and k not in ignored]
    result = IncompatibleKeys(missing, unexpected, mismatched)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(_report(result))
    for slot, value in puts:
        slot.put(jnp.asarray(value.astype(slot.dtype)))
    return result


def _report(r: IncompatibleKeys) -> str:
    lines = [f"the state_dict does not fit the model ({sum(map(len, r))} problems):"]
    for title, keys in (
        ("missing keys (the model has them, the state_dict does not)", r.missing_keys),
        ("unexpected keys (in the state_dict, not in the model)", r.unexpected_keys),
        ("mismatched keys", r.mismatched_keys),
    ):
        if keys:
            lines.append(f"  {title}:")
            lines.extend(f"    {k}" for k in keys)
    lines.append("Rename keys with key_map=, build the model with the PyTorch module's sizes, or pass strict=False.")
    return "\n".join(lines)


def _fetch(key: str, state: Mapping[str, Any]) -> tuple[list[str], np.ndarray] | None:
    """The value for `key`, with the keys it used: the key itself, or weight_norm's pair folded."""
    if key in state:
        return [key], to_numpy(key, state[key])
    head, _, name = key.rpartition(".")
    if name != "weight":
        return None
    prefix = f"{head}." if head else ""
    for g_name, v_name in _WEIGHT_NORM:
        g_key, v_key = prefix + g_name, prefix + v_name
        if g_key in state and v_key in state:
            return [g_key, v_key], fold_weight_norm(to_numpy(g_key, state[g_key]), to_numpy(v_key, state[v_key]))
    return None


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """PyTorch's weight_norm weight `g * v / ||v||`, the norm over the axes where `g` has size 1 (in float32 or wider).

    Example:
        >>> fold_weight_norm(np.full((2, 1), 3.0), np.array([[3.0, 4.0], [0.0, 1.0]]))
        array([[1.8, 2.4],
               [0. , 3. ]])
    """
    dtype = np.promote_types(v.dtype, np.float32)
    g32, v32 = g.astype(dtype), v.astype(dtype)
    axes = tuple(i for i in range(v.ndim) if g.ndim == 0 or g.shape[i] == 1)
    norm = np.sqrt(np.sum(v32 * v32, axis=axes, keepdims=True))
    return (v32 * (g32 / norm)).astype(v.dtype)


def _convert(slot: Slot, value: np.ndarray) -> np.ndarray:
    if slot.how == "prelu":  # PyTorch's PReLU() holds (1,), nnx.PReLU ()
        return value.reshape(()) if value.shape == (1,) else value
    return value if slot.how == "same" else to_kernel(slot.how, value)


def _unconvert(slot: Slot, value: np.ndarray) -> np.ndarray:
    if slot.how == "prelu":
        return value.reshape(-1)
    return value if slot.how == "same" else from_kernel(slot.how, value)


def _source(state_dict: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(state, {module path: kind}) from a mapping or from a torch module (duck-typed)."""
    if hasattr(state_dict, "state_dict") and hasattr(state_dict, "named_modules"):
        kinds = {name: kind_of_torch_module(m) for name, m in state_dict.named_modules()}
        return dict(state_dict.state_dict()), {n: k for n, k in kinds.items() if k}
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict is a {type(state_dict).__name__}; give module.state_dict() (a mapping from PyTorch keys to "
            "tensors or arrays) or the torch module itself."
        )
    return dict(state_dict), {}


def _rename(state: dict[str, Any], key_map: KeyMap) -> dict[str, Any]:
    if key_map is None:
        return state
    out = {}
    for key, value in state.items():
        new = key_map(key) if callable(key_map) else _rename_prefix(key, key_map)
        if new is not None:
            out[new] = value
    return out


def _rename_prefix(key: str, key_map: Mapping[str, str]) -> str:
    matches = [p for p in key_map if p == "" or key == p or key.startswith(p + ".")]
    if not matches:
        return key
    old = max(matches, key=len)
    rest = key[len(old) :].lstrip(".") if old else key
    return ".".join(p for p in (key_map[old], rest) if p)


# ------------------------------------------------------------------------------------ NNX


def _nnx_slots(model: nnx.Module) -> list[Slot]:
    modules = dict(nnx.iter_modules(model))
    slots = []
    for path, module in modules.items():
        prefix = ".".join(str(p) for i, p in enumerate(path) if not _sequential_layers(modules, path, i))
        where = type(module).__name__ + (f" at {'.'.join(map(str, path))}" if path else " (the model)")
        for torch_name, (attr, how) in _nnx_table(module).items():
            var = getattr(module, attr, None)
            if isinstance(var, nnx.Variable):
                key = f"{prefix}.{torch_name}" if prefix else torch_name
                value = var.get_value()
                put = _placed(var.set_value, value)
                slots.append(Slot(key, f"{where}.{attr}", how, tuple(value.shape), value.dtype, put, var.get_value))
    return slots


def _placed(set_value: Callable[[Any], None], old: Any) -> Callable[[Any], None]:
    """`set_value` that puts the new array where the old value was sharded (an abstract mesh: the one in use)."""
    sharding = getattr(old, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return set_value
    mesh = sharding.mesh
    if isinstance(mesh, jax.sharding.AbstractMesh):
        mesh = jax.sharding.get_mesh()  # the concrete mesh of `with jax.set_mesh(...)`
        if mesh.empty:
            return set_value
    target = jax.sharding.NamedSharding(mesh, sharding.spec)
    return lambda value: set_value(jax.device_put(value, target))


def _sequential_layers(modules: Mapping[tuple, Any], path: tuple, i: int) -> bool:
    return path[i] == "layers" and isinstance(modules.get(path[:i]), nnx.Sequential)


def _nnx_table(module: nnx.Module) -> dict[str, tuple[str, str]]:
    """{PyTorch name: (attribute, conversion)} for one NNX module's own variables."""
    if isinstance(module, ConvTranspose):
        return {"weight": ("kernel", "conv_transpose"), "bias": ("bias", "same")}
    if isinstance(module, nnx.Conv):
        return {"weight": ("kernel", "conv"), "bias": ("bias", "same")}
    if isinstance(module, nnx.Linear):
        return {"weight": ("kernel", "linear"), "bias": ("bias", "same")}
    if isinstance(module, nnx.BatchNorm):
        return {t: (f, "same") for t, f in _BATCH_NORM.items()}
    if isinstance(module, nnx.LayerNorm | nnx.GroupNorm | nnx.RMSNorm):
        return {t: (f, "same") for t, f in _NORM.items()}
    if isinstance(module, nnx.PReLU):
        return {"weight": ("negative_slope", "prelu")}
    if isinstance(module, nnx.Embed):
        return {"weight": ("embedding", "same")}
    own = vars(module).items()
    return {n: (n, "same") for n, v in own if isinstance(v, nnx.Param | nnx.BatchStat)}


# ------------------------------------------------------------------------------------ Linen

_LINEN_NAME = {
    "ConvTranspose": "conv_transpose",
    "ConvTranspose1d": "conv_transpose",
    "ConvTranspose2d": "conv_transpose",
    "ConvTranspose3d": "conv_transpose",
    "Conv": "conv",
    "Dense": "linear",
    "BatchNorm": "batch_norm",
    "LayerNorm": "norm",
    "GroupNorm": "norm",
}


def _linen_slots(tree: dict[str, Any], kinds: dict[str, str]) -> list[Slot]:
    slots = []
    for path, layer in _linen_layers(tree["params"], ()):
        dotted = ".".join(path)
        kind = _linen_kind(dotted, path, layer, tree, kinds)
        stats = _get(tree.get("batch_stats", {}), path) or {}
        if kind == "batch_norm":
            table = {
                t: ("params" if f in ("scale", "bias") else "batch_stats", f, "same") for t, f in _BATCH_NORM.items()
            }
        elif kind == "norm":
            table = {t: ("params", f, "same") for t, f in _NORM.items()}
        else:
            table = {"weight": ("params", "kernel", kind), "bias": ("params", "bias", "same")}
        for torch_name, (collection, name, how) in table.items():
            holder = layer if collection == "params" else stats
            if name in holder:
                key = f"{dotted}.{torch_name}" if dotted else torch_name
                slots.append(_linen_slot(key, f"{collection}/{'/'.join((*path, name))}", how, holder, name))
    return slots


def _linen_slot(key: str, where: str, how: str, holder: dict, name: str) -> Slot:
    def put(value):
        holder[name] = value

    value = holder[name]
    return Slot(key, where, how, tuple(value.shape), value.dtype, put, lambda: holder[name])


def _linen_layers(params: dict, path: tuple[str, ...]):
    """(path, dict) for every dict of params that holds arrays (a layer)."""
    if any(not isinstance(v, Mapping) for v in params.values()):
        yield path, params
    for name, value in params.items():
        if isinstance(value, Mapping):
            yield from _linen_layers(value, (*path, name))


def _linen_kind(dotted: str, path: tuple, layer: Mapping, tree: Mapping, kinds: Mapping[str, str]) -> str:
    if dotted in kinds:
        return kinds[dotted]
    auto = re.fullmatch(r"(\w+?)_\d+", path[-1]) if path else None
    if auto and auto.group(1) in _LINEN_NAME:
        return _LINEN_NAME[auto.group(1)]
    if "mean" in (_get(tree.get("batch_stats", {}), path) or {}):
        return "batch_norm"
    if "scale" in layer:
        return "norm"
    if "kernel" in layer and layer["kernel"].ndim == 2:
        return "linear"
    raise ValueError(
        f"the Linen layer at {dotted!r} has a kernel of shape {tuple(layer['kernel'].shape)}, which could be a Conv "
        f"or a ConvTranspose one; say which with kinds={{{dotted!r}: 'conv_transpose'}} (or 'conv')."
    )


def _get(tree: Mapping, path: tuple) -> Any:
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def _unfreeze(tree: Any) -> Any:
    return {k: _unfreeze(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree
