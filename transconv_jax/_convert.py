"""A transposed convolution as a stride-1 convolution + pixel shuffle, and back; overlap counts; ICNR.

A stride-`s` transposed convolution is `s^dims` stride-1 correlations of the kernel's phases,
interleaved (`_subpixel.py`). Put every phase of an axis on one tap grid (zero taps where a phase
has none) and the phases become the output channels of one convolution, `c * prod(s) + phase`
as PyTorch's `pixel_shuffle` reads them; padding the input, convolving, shuffling and cropping
gives the transposed convolution exactly, for every stride, kernel, dilation, group count and
`output_padding`. `as_conv_transpose` goes the other way for any stride-1 convolution with
padding at most `k - 1` per side followed by a pixel shuffle.

Checkerboards (Odena et al. 2016): output position `u = q s + r` of a transposed convolution
receives the taps `k` with `k d = r (mod s)`; `overlap_counts` counts them per phase `r`. When the
counts differ, a constant input gives a periodic output whatever the weights. When they agree
(every kernel size a multiple of the stride, no dilation), `tie_phases` makes the phases equal
(ICNR, Aitken et al. 2017) and a constant input gives a constant output away from the borders.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from ._conv import as_array, conv, pad_spatial
from ._dispatch import conv_transpose
from ._shuffle import pixel_shuffle
from ._spec import Pairs, Spec, check_groups, int_tuple, make_spec
from ._subpixel import Axis, plan


@dataclasses.dataclass(frozen=True, eq=False)  # holds an array: hashed by identity, so jax.jit(obj) works
class SubpixelConv:
    """A transposed convolution as pad, stride-1 `conv`, `pixel_shuffle`, crop (from `as_subpixel_conv`).

    Attributes:
        weight: PyTorch's Conv layout `(C_out * prod(upscale), C_in // groups, *k')`.
        input_padding: per-axis `(low, high)` padding of the input; negative entries crop it.
        upscale: the pixel-shuffle factor per axis (the transposed convolution's stride).
        crop: per-axis `(low, high)` rows to drop from the shuffled output.
        groups: the convolution's groups.
    """

    weight: jax.Array
    input_padding: Pairs
    upscale: tuple[int, ...]
    crop: Pairs
    groups: int

    def expand_bias(self, bias: ArrayLike) -> jax.Array:
        """The convolution's bias `(C_out * prod(upscale),)` for the transposed one's `(C_out,)`."""
        return jnp.repeat(jnp.asarray(bias), math.prod(self.upscale))

    def __call__(self, input: ArrayLike, bias: ArrayLike | None = None) -> jax.Array:
        """Pad, convolve, shuffle, crop: `conv_transpose(input, w, bias, ...)`; `input` may lack the batch axis."""
        x = as_array(input)
        if x.ndim == self.weight.ndim - 1:  # unbatched, as PyTorch allows
            return self(x[None], bias)[0]
        self._check_input(x)
        b = None if bias is None else self.expand_bias(bias)
        z = conv(pad_spatial(x, self.input_padding), self.weight, b, groups=self.groups)
        return pad_spatial(pixel_shuffle(z, self.upscale), [(-lo, -hi) for lo, hi in self.crop])

    def _check_input(self, x) -> None:
        if x.ndim != self.weight.ndim:
            raise ValueError(
                f"input has shape {x.shape}; it must be (N, C_in, *spatial) or (C_in, *spatial), "
                f"rank {self.weight.ndim} or {self.weight.ndim - 1}."
            )
        rows = [n + lo + hi - k + 1 for n, (lo, hi), k in zip(x.shape[2:], self.input_padding, self.weight.shape[2:])]
        out = [m * s - lo - hi for m, s, (lo, hi) in zip(rows, self.upscale, self.crop)]
        if min(rows) < 1 or min(out) < 1:
            raise ValueError(
                f"input has spatial shape {x.shape[2:]}; the transposed convolution's output would be {tuple(out)}. "
                f"Every size must be >= 1: use a larger input."
            )


def as_subpixel_conv(
    weight: ArrayLike, stride, padding=0, output_padding=0, dilation=1, groups: int = 1
) -> SubpixelConv:
    """The transposed convolution `conv_transpose(., weight, ...)` as a stride-1 convolution + pixel shuffle.

    Phase `r` of an axis (output rows `q s + r` before the crop) is a correlation with the taps
    `k d = r (mod s)`; the phases share one tap grid of `k' = floor(d (k - 1) / s) + 1` taps (zeros
    where a phase has none) and become the output channels `c * prod(s) + r` of one convolution.

    Args:
        weight: the transposed convolution's kernel `(C_in, C_out // groups, *kernel)` (PyTorch's layout).
        stride, padding, output_padding, dilation, groups: as for `conv_transpose` (PyTorch's
            meanings; string padding is JAX's).

    Returns:
        A `SubpixelConv`: its `weight` is a PyTorch Conv kernel `(C_out * prod(stride), C_in // groups, *k')`;
        calling it runs pad, `conv`, `pixel_shuffle`, crop, equal to `conv_transpose` with the same arguments.

    Example:
        >>> import jax.numpy as jnp
        >>> import transconv_jax as tc
        >>> w, y = jnp.ones((2, 3, 4, 4)), jnp.ones((1, 2, 5, 5))
        >>> sp = tc.as_subpixel_conv(w, stride=2, padding=1)
        >>> sp.weight.shape, sp.input_padding, sp.crop
        ((12, 2, 2, 2), ((1, 1), (1, 1)), ((1, 1), (1, 1)))
        >>> bool(jnp.allclose(sp(y), tc.conv_transpose(y, w, stride=2, padding=1)))
        True
    """
    w = as_array(weight)
    _check_kernel("weight", w, "(C_in, C_out // groups, *kernel)", groups, w.shape[:1])
    nd = w.ndim - 2
    spec = make_spec(nd, (1,) * nd, w.shape[2:], stride, padding, dilation, groups, None, output_padding=output_padding)
    axes = plan((1,) * nd, w.shape[2:], spec)
    grids = [_tap_grid(a, k) for a, k in zip(axes, w.shape[2:])]
    w = jnp.pad(w, [(0, 0), (0, 0)] + [(0, 1)] * nd)  # tap index k is a zero
    for i, (index, _) in enumerate(grids):
        w = jnp.take(w, index, axis=2 + 2 * i)  # kernel axis i becomes (phase, tap)
    c_in, c_og, g = w.shape[0], w.shape[1], spec.groups
    w = w.reshape(g, c_in // g, c_og, *w.shape[2:])
    w = w.transpose(0, 2, *range(3, 3 + 2 * nd, 2), 1, *range(4, 4 + 2 * nd, 2))
    w = w.reshape(g * c_og * math.prod(spec.stride), c_in // g, *(index.shape[1] for index, _ in grids))
    return SubpixelConv(w, tuple(pad for _, pad in grids), spec.stride, tuple(a.crop for a in axes), g)


def _tap_grid(axis: Axis, k: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One axis's phases on a shared tap grid: the kernel index of each (phase, tap), `k` for a zero,
    and the input padding `(low, high)` that gives `axis.rows` rows (the plan's spatial size is 1)."""
    live = [p for p in axis.phases if p.taps]
    low = max(p.pad[0] for p in live)
    size = 1 + max(low - p.pad[0] + (len(p.taps) - 1) * p.dilation for p in live)
    index = np.full((len(axis.phases), size), k)
    for r, p in enumerate(axis.phases):
        index[r, [low - p.pad[0] + j * p.dilation for j in range(len(p.taps))]] = p.taps
    return index, (low, axis.rows - 1 - low + size - 1)


# ------------------------------------------------------------------------------ and back


@dataclasses.dataclass(frozen=True, eq=False)  # holds an array: hashed by identity, so jax.jit(obj) works
class ConvTransposeArgs:
    """A stride-1 convolution + pixel shuffle as `conv_transpose` arguments (from `as_conv_transpose`).

    Attributes:
        weight: PyTorch's ConvTranspose layout `(C_in, C_out // groups, *kernel)`.
        stride: per axis (the upscale factor).
        padding: one int per axis, or per-axis `(low, high)` pairs where the conv's padding was uneven.
        output_padding: per axis (always zeros).
        groups: the transposed convolution's groups.
    """

    weight: jax.Array
    stride: tuple[int, ...]
    padding: tuple[int, ...] | Pairs
    output_padding: tuple[int, ...]
    groups: int

    def kwargs(self) -> dict:
        """`stride`, `padding`, `output_padding` and `groups` as keyword arguments of `conv_transpose`."""
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding, groups=self.groups)

    def channel_bias(self, conv_bias: ArrayLike) -> jax.Array:
        """The conv's bias `(C_out * prod(stride),)` as the transposed one's `(C_out,)`; its phases must agree.

        A bias that differs between the phases is a periodic pattern, not a per-channel bias: pass
        it to `__call__` instead.
        """
        b = np.asarray(conv_bias).reshape(-1, math.prod(self.stride))
        if not np.all(b == b[:, :1]):
            raise ValueError(
                "conv_bias differs between the phases of a channel (entries c * prod(stride) + phase), so it is a "
                "periodic pattern, not a per-channel bias; pass it to ConvTransposeArgs.__call__(x, bias) instead."
            )
        return jnp.asarray(b[:, 0])

    def __call__(self, input: ArrayLike, bias: ArrayLike | None = None, *, method: str = "auto") -> jax.Array:
        """`conv_transpose(input, weight, **kwargs())`, plus the conv's `bias` `(C_out * prod(stride),)` if given."""
        z = conv_transpose(input, self.weight, **self.kwargs(), method=method)
        if bias is None:
            return z
        n, c, *spatial = z.shape
        z = z.reshape(n, c, *itertools.chain.from_iterable((m // s, s) for m, s in zip(spatial, self.stride)))
        b = jnp.asarray(bias).reshape(c, *self.stride)
        b = b.reshape(1, c, *itertools.chain.from_iterable((1, s) for s in self.stride))
        return (z + b).reshape(n, c, *spatial)


def as_conv_transpose(conv_weight: ArrayLike, upscale_factor, conv_padding=0, groups: int = 1) -> ConvTransposeArgs:
    """The transposed convolution equal to `pixel_shuffle(conv(x, conv_weight, padding=conv_padding, groups=groups), r)`.

    Phase `i` of output channel `c` is conv channel `c * prod(r) + i`; its tap `j` lands on
    transposed-kernel tap `(k' - 1 - j) r + i`, so the kernel is `k' r` long (flipped and
    interleaved), the stride is `r` and the padding `(k' - 1 - p) r` per side for conv padding `p`.
    When `groups` does not divide the conv's `C_out` the result has one group and zeros between groups.

    Args:
        conv_weight: a stride-1 Conv kernel `(C_out * prod(r), C_in // groups, *k')` (PyTorch's layout).
        upscale_factor: the pixel shuffle's factor, int or one per spatial axis.
        conv_padding: the conv's padding: int or one per axis (both sides), `(low, high)` pairs, or
            'SAME' / 'VALID'; at most `k' - 1` per side.
        groups: the conv's groups.

    Returns:
        A `ConvTransposeArgs`: `conv_transpose(x, a.weight, **a.kwargs())`, or `a(x)`, gives the same output.

    Example:
        >>> import jax.numpy as jnp
        >>> import transconv_jax as tc
                >>> w, x = jnp.arange(36.0).reshape(4, 1, 3, 3), jnp.ones((1, 1, 5, 5))
        >>> a = tc.as_conv_transpose(w, 2, conv_padding=1)
        >>> a.weight.shape, a.kwargs()
        ((1, 1, 6, 6), {'stride': (2, 2), 'padding': (2, 2), 'output_padding': (0, 0), 'groups': 1})
        >>> bool(jnp.allclose(a(x), tc.pixel_shuffle(tc.conv(x, w, padding=1), 2)))
        True
    """
    w = as_array(conv_weight)
    _check_kernel("conv_weight", w, "(C_out * prod(upscale_factor), C_in // groups, *kernel)", groups, ())
    nd, kernel = w.ndim - 2, w.shape[2:]
    r = int_tuple("upscale_factor", upscale_factor, nd, minimum=1)
    pads = make_spec(nd, (1,) * nd, kernel, 1, conv_padding, 1, groups, None, transpose=False).padding
    _check_conv_channels(w.shape[0], r, groups)
    if any(p > k - 1 for k, pair in zip(kernel, pads) for p in pair):
        raise ValueError(
            f"conv_padding={conv_padding!r} is (low, high) = {pads} per axis but the kernel {kernel} allows at most "
            f"k - 1 per side: rows beyond that see only padding, which no transposed convolution produces. "
            f"Pad the result instead."
        )
    c_out = w.shape[0] // math.prod(r)
    g = groups if c_out % groups == 0 else 1
    w = _ungroup(w, groups) if g != groups else w
    w = w.reshape(g, c_out // g, *r, w.shape[1], *kernel)
    w = jnp.flip(w, axis=tuple(range(3 + nd, 3 + 2 * nd)))  # tap j -> k' - 1 - j
    w = w.transpose(0, 2 + nd, 1, *itertools.chain.from_iterable((3 + nd + i, 2 + i) for i in range(nd)))
    w = w.reshape(-1, c_out // g, *(k * s for k, s in zip(kernel, r)))
    crops = tuple(((k - 1 - lo) * s, (k - 1 - hi) * s) for k, s, (lo, hi) in zip(kernel, r, pads))
    padding = tuple(lo for lo, _ in crops) if all(lo == hi for lo, hi in crops) else crops
    return ConvTransposeArgs(w, r, padding, (0,) * nd, g)


def _ungroup(w: jax.Array, groups: int) -> jax.Array:
    """A grouped Conv kernel `(C_out, C_in // g, *k)` as the one-group kernel `(C_out, C_in, *k)` (zeros between)."""
    c_out, c_ig, *k = w.shape
    w = w.reshape(groups, c_out // groups, c_ig, *k)
    w = jnp.einsum("gmc...,gh->gmhc...", w, jnp.eye(groups, dtype=w.dtype))
    return w.reshape(c_out, groups * c_ig, *k)


# ------------------------------------------------------------------------------- checks


def _check_kernel(name, w, layout, groups, grouped_axis) -> None:
    if w.ndim not in (3, 4, 5):
        raise ValueError(f"{name} has shape {w.shape}; it must be {layout} with 1 to 3 kernel axes (rank 3 to 5).")
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"{name} has dtype {w.dtype}; it must be floating. Cast it, e.g. {name}.astype(jnp.float32).")
    if 0 in w.shape:
        raise ValueError(f"{name} has shape {w.shape} ({layout}); no axis may be empty.")
    check_groups(groups)
    if grouped_axis and grouped_axis[0] % groups:
        raise ValueError(
            f"groups={groups} must divide the {grouped_axis[0]} input channels of {name} (its first axis)."
        )


def _check_conv_channels(c, r, groups) -> None:
    if c % math.prod(r) or c % groups:
        raise ValueError(
            f"conv_weight has {c} output channels (its first axis); pixel shuffle by upscale_factor={r} and "
            f"groups={groups} need a multiple of both prod(upscale_factor) = {math.prod(r)} and groups."
        )


# ------------------------------------------------------------------ overlap and ICNR


def overlap_counts(kernel_size, stride, dilation=1) -> np.ndarray:
    """How many kernel taps reach each output position of a transposed convolution's repeating pattern.

    Entry `r` (one index per axis) counts the taps `k` with `k d = r (mod s)`: the terms that
    full-output position `q s + r` sums, away from the borders. Unequal counts mean a
    checkerboard (Odena et al. 2016) whatever the weights. Padding shifts the pattern, not the counts.

    Args:
        kernel_size: int or one int per spatial axis.
        stride: int or one int per spatial axis.
        dilation: int or one int per spatial axis.

    Returns:
        An integer array of shape `stride`.

    Example:
        >>> overlap_counts(3, 2), overlap_counts((4, 3), 2)
        (array([2, 1]), array([[4, 2],
               [4, 2]]))
    """
    nd = _ndim(kernel_size, stride, dilation)
    kernel = int_tuple("kernel_size", kernel_size, nd, minimum=1)
    spec = Spec(int_tuple("stride", stride, nd, minimum=1), ((0, 0),) * nd, int_tuple("dilation", dilation, nd, 1), 1)
    counts = [np.array([len(p.taps) for p in a.phases]) for a in plan((1,) * nd, kernel, spec)]
    return functools.reduce(np.multiply.outer, counts)


def checkerboard_free(kernel_size, stride, dilation=1) -> bool:
    """Whether every output phase receives the same number of taps (`overlap_counts` all equal).

    Args:
        kernel_size: int or one int per spatial axis.
        stride: int or one int per spatial axis.
        dilation: int or one int per spatial axis.

    Returns:
        True when no checkerboard comes from uneven overlap (e.g. every kernel size a multiple of its stride).

    Example:
        >>> checkerboard_free(4, 2), checkerboard_free(3, 2)
        (True, False)
    """
    counts = overlap_counts(kernel_size, stride, dilation)
    return bool(np.all(counts == counts.flat[0]))


def _ndim(*args) -> int:
    return next((len(a) for a in args if isinstance(a, (tuple, list))), 1)


def tie_phases(kernel: jax.Array, stride) -> jax.Array:
    """ICNR's tying: every phase of a channels-last kernel `(*k, in, out // groups)` made equal to phase 0.

    Taps `j s + r` of every phase `r` take the value of tap `j s`, so each block of `s` taps is
    constant and the layer is a nearest-neighbour upsampling of one stride-1 transposed convolution.

    Args:
        kernel: `(*kernel_size, in, out // groups)`, every kernel size a multiple of its stride.
        stride: int or one int per spatial axis.

    Returns:
        The tied kernel, same shape and dtype.

    Example:
        >>> tie_phases(jnp.arange(4.0).reshape(4, 1, 1), 2)[:, 0, 0]
        Array([0., 0., 2., 2.], dtype=float32)
    """
    nd = kernel.ndim - 2
    s = int_tuple("stride", stride, nd, minimum=1)
    if any(k % t for k, t in zip(kernel.shape[:nd], s)):
        raise ValueError(
            f"the kernel has shape {kernel.shape} (*kernel_size, in, out // groups) and stride={stride!r}; ICNR needs "
            f"every kernel size a multiple of its stride (e.g. kernel 4 for stride 2): else the phases have "
            f"different tap counts and cannot be equal."
        )
    for axis, t in enumerate(s):
        kernel = jnp.repeat(lax.slice_in_dim(kernel, 0, None, t, axis=axis), t, axis=axis)
    return kernel
