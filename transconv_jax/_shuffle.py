"""Depth-to-space: PyTorch's `pixel_shuffle` / `pixel_unshuffle`, and the interleave every strided form ends with.

A stride-`s` transposed convolution computes its output in `prod(s)` phases: output row
`q * s + r` is row `q` of phase `r`. Putting the phases back in place is a depth-to-space, the
same reshape-transpose-reshape as PyTorch's `pixel_shuffle` (channel `c * prod(s) + r` of its input
is phase `r`, in row-major order over the axes, of output channel `c`). `interleave` is that one
helper; the forms and `pixel_shuffle` describe their array's axes to it with a layout string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from ._spec import int_tuple


def interleave(x: jax.Array, layout: str, factors: Sequence[int], *, channels_last: bool = False) -> jax.Array:
    """Depth-to-space: the `P` axis of `x` (size `prod(factors)`, row-major) spread over the spatial axes.

    Args:
        x: the phases; its axes are named by `layout`.
        layout: one letter per axis of `x`: `N` (batch), `C` (channels), `P` (phases) and one `X`
            per spatial axis, in order, e.g. `"NXXCP"`.
        factors: the upscale factor of each spatial axis.
        channels_last: the result is `(N, *spatial, C)` instead of `(N, C, *spatial)`.

    Returns:
        `(N, C, *(rows * factors))`, or channels-last.

    Example:
        >>> import jax.numpy as jnp
        >>> interleave(jnp.arange(4.0).reshape(1, 1, 2, 2), "NCXP", (2,))[0, 0]
        Array([0., 1., 2., 3.], dtype=float32)
    """
    p = layout.index("P")
    x = x.reshape(*x.shape[:p], *factors, *x.shape[p + 1 :])
    names = layout[:p] + "R" * len(factors) + layout[p + 1 :]
    rows = [i for i, a in enumerate(names) if a == "X"]
    phases = [i for i, a in enumerate(names) if a == "R"]
    spatial = [i for pair in zip(rows, phases, strict=True) for i in pair]
    n, c = names.index("N"), names.index("C")
    sizes = [x.shape[r] * x.shape[p] for r, p in zip(rows, phases, strict=True)]
    nd = len(rows)
    if channels_last:
        x = x.transpose(n, *spatial, c)
        return reshape(x, (x.shape[0], *sizes, x.shape[-1]), (0, *range(1, 1 + 2 * nd, 2), 1 + 2 * nd))
    x = x.transpose(n, c, *spatial)
    return reshape(x, (*x.shape[:2], *sizes), (0, 1, *range(2, 2 + 2 * nd, 2)))


def explicit_spec(x: jax.Array):
    """The `PartitionSpec` of `x` over Explicit mesh axes (`jax.make_mesh`'s default), as its abstract
    value carries it; None where it has none (unsharded, or sharded by GSPMD outside the type)."""
    spec = getattr(jax.typeof(x).sharding, "spec", None)
    return None if spec is None or all(s is None for s in spec) else spec


def unpartitioned(x: jax.Array) -> bool:
    """Whether no partitioner can split a program over `x`: this process sees one device in all
    (`jax.device_count()`) and `x` has no sharding in its type (`explicit_spec`). A reshape may
    then merge any axes; with more devices, GSPMD keeps an axis's sharding through a reshape only
    where that axis is the major part of what it is merged into, and gathers it otherwise."""
    return jax.device_count() == 1 and explicit_spec(x) is None


def reshape(x: jax.Array, shape: Sequence[int], major: Sequence[int | None]) -> jax.Array:
    """`x.reshape(shape)`, output axis `i` taking the sharding of input axis `major[i]` (None: none).

    Under a mesh with explicit axes (`jax.make_mesh`'s default), JAX asks for the sharding of a
    reshape that merges or splits axes; each merged axis here is sharded at most on its major part,
    which it then keeps. Anywhere else this is a plain reshape.
    """
    spec = explicit_spec(x)
    if spec is None:
        return x.reshape(shape)
    return lax.reshape(x, tuple(shape), out_sharding=P(*(None if m is None else spec[m] for m in major)))


def pixel_shuffle(input: ArrayLike, upscale_factor: int | Sequence[int]) -> jax.Array:
    """PyTorch's `pixel_shuffle`: `(*, C * prod(r), *spatial)` to `(*, C, *(spatial * r))`, channels first.

    An int factor means two spatial axes, as in `torch.nn.functional.pixel_shuffle`; a tuple gives
    one factor per spatial axis (1-D to 3-D). Channel `c * prod(r) + j` of the input becomes phase `j`
    (row-major over the axes) of output channel `c`, as in PyTorch.

    Args:
        input: `(*batch, C * prod(r), *spatial)`, any number of leading axes.
        upscale_factor: an int (2-D) or one int per spatial axis.

    Returns:
        `(*batch, C, *(spatial * r))`.

    Example:
        >>> import jax.numpy as jnp
        >>> pixel_shuffle(jnp.arange(4.0).reshape(4, 1, 1), 2)
        Array([[[0., 1.],
                [2., 3.]]], dtype=float32)
    """
    x, factors = _check(input, upscale_factor, "upscale_factor", divide=True)
    nd, lead = len(factors), x.ndim - len(factors) - 1
    batch, (c, *rows) = x.shape[:lead], x.shape[lead:]
    x = x.reshape(math.prod(batch), c // math.prod(factors), math.prod(factors), *rows)
    out = interleave(x, "NCP" + "X" * nd, factors)
    return out.reshape(*batch, *out.shape[1:])


def pixel_unshuffle(input: ArrayLike, downscale_factor: int | Sequence[int]) -> jax.Array:
    """PyTorch's `pixel_unshuffle`, the inverse of `pixel_shuffle`: `(*, C, *(spatial * r))` to `(*, C * prod(r), *spatial)`.

    Args:
        input: `(*batch, C, *spatial)`, every spatial size a multiple of its factor.
        downscale_factor: an int (2-D) or one int per spatial axis.

    Returns:
        `(*batch, C * prod(r), *(spatial / r))`.

    Example:
        >>> import jax.numpy as jnp
        >>> pixel_unshuffle(jnp.arange(4.0).reshape(1, 2, 2), 2)[:, 0, 0]
        Array([0., 1., 2., 3.], dtype=float32)
    """
    x, factors = _check(input, downscale_factor, "downscale_factor", divide=False)
    nd, lead = len(factors), x.ndim - len(factors) - 1
    batch, (c, *sizes) = x.shape[:lead], x.shape[lead:]
    split = [v for n, r in zip(sizes, factors, strict=True) for v in (n // r, r)]
    x = x.reshape(math.prod(batch), c, *split)
    perm = (0, 1, *range(3, 2 + 2 * nd, 2), *range(2, 2 + 2 * nd, 2))  # (N, C, *r, *rows)
    x = x.transpose(perm).reshape(
        *batch, c * math.prod(factors), *(n // r for n, r in zip(sizes, factors, strict=True))
    )
    return x


def _check(input, factor, name: str, *, divide: bool) -> tuple[jax.Array, tuple[int, ...]]:
    x = input if hasattr(input, "shape") and hasattr(input, "dtype") else jnp.asarray(input)
    factors = int_tuple(name, factor, 2 if isinstance(factor, int) else None, minimum=1)
    if not 1 <= len(factors) <= 3 or x.ndim < len(factors) + 1:
        raise ValueError(
            f"{name}={factor!r} gives {len(factors)} spatial axes, but input has shape {tuple(x.shape)}; input must be "
            f"(*batch, C, *spatial) with 1 to 3 spatial axes (an int factor means 2, as in PyTorch)."
        )
    c, sizes = x.shape[x.ndim - len(factors) - 1], x.shape[x.ndim - len(factors) :]
    if divide and c % math.prod(factors):
        raise ValueError(
            f"input has {c} channels (shape {tuple(x.shape)}), which {name}={factor!r} must divide into "
            f"C * {math.prod(factors)}: the channel axis is the one before the {len(factors)} spatial axes."
        )
    if not divide and any(n % r for n, r in zip(sizes, factors, strict=True)):
        raise ValueError(f"input has spatial shape {tuple(sizes)}; each size must be a multiple of {name}={factor!r}.")
    return x, factors


def pixel_shuffle_channels_last(input: ArrayLike, upscale_factor: int | Sequence[int]) -> jax.Array:
    """`pixel_shuffle` for channels-last input: `(*batch, *spatial, C * prod(r))` to `(*batch, *(spatial * r), C)`.

    The channel order is PyTorch's (input channel `c * prod(r) + j` is phase `j` of output channel `c`);
    an int factor means two spatial axes, as in `torch.nn.PixelShuffle`.

    Args:
        input: `(*batch, *spatial, C * prod(r))`, any number of leading axes.
        upscale_factor: an int (2-D) or one int per spatial axis.

    Returns:
        `(*batch, *(spatial * r), C)`.

    Example:
        >>> import jax.numpy as jnp
        >>> pixel_shuffle_channels_last(jnp.arange(4.0).reshape(1, 1, 4), 2)[..., 0]
        Array([[0., 1.],
               [2., 3.]], dtype=float32)
    """
    x = jnp.asarray(input)
    factors = int_tuple("upscale_factor", upscale_factor, 2 if isinstance(upscale_factor, int) else None, minimum=1)
    nd, p = len(factors), math.prod(factors)
    if not 1 <= nd <= 3 or x.ndim < nd + 1 or x.shape[-1] % p:
        raise ValueError(
            f"input has shape {tuple(x.shape)}; with upscale_factor={upscale_factor!r} it must be "
            f"(*batch, *spatial, C * {p}) with {nd} spatial axes (an int factor means 2, as in PyTorch)."
        )
    batch, rows, c = x.shape[: x.ndim - nd - 1], x.shape[x.ndim - nd - 1 : -1], x.shape[-1]
    x = x.reshape(math.prod(batch), *rows, c // p, p)
    out = interleave(x, "N" + "X" * nd + "CP", factors, channels_last=True)
    return out.reshape(*batch, *out.shape[1:])
