"""The fast form: a stride-`s` transposed convolution as stride-1 convolutions of the kernel's phases.

Output row `u` of the full (uncropped) transposed convolution receives `y[i] * w[k]` where
`u = i s + k d`. Write `u = q s + r`: the rows of phase `r` (`0 <= r < s`) receive only the taps
`k` with `k d = r (mod s)`, and for them `i = q - (k d - r) / s`, so phase `r` is an ordinary
stride-1 correlation of `y` with those taps (flipped, dilated by `d / gcd(s, d)`). The phases
are interleaved by depth-to-space and the crop (`padding`) is applied to the interleaved rows.
When every phase has the same taps layout (every kernel size a multiple of its stride, no
dilation) all phases are one convolution with `s^dims * C_out` output channels plus one reshape;
otherwise there is one exact convolution per phase. Nothing is multiplied by an inserted zero.

Gradients: the phase convolution has a `jax.custom_jvp` whose tangent in the kernel is a sum of
per-tap matrix products (under `jax.checkpoint`), so reverse mode computes the kernel gradient as
one GEMM per tap instead of XLA:CPU's slow weight gradient of a padded convolution, and the input
gradient is the stride-1 convolution that transposes it. Forward mode works too.
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

from ._conv import _NCX
from ._spec import Spec, transpose_spatial


@dataclasses.dataclass(frozen=True)
class _Phase:
    """One output phase `r` of one axis: its taps (flipped), their dilation and the input padding."""

    taps: tuple[int, ...]
    dilation: int
    pad: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class _Axis:
    """The phase decomposition of one spatial axis: `s` phases over `q` rows, then a crop."""

    phases: tuple[_Phase, ...]
    rows: int
    crop: tuple[int, int]

    @property
    def fused(self) -> bool:
        return len({(len(p.taps), p.dilation, p.pad) for p in self.phases}) == 1 and bool(self.phases[0].taps)


def conv_transpose_subpixel_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The transposed convolution as stride-1 convolutions of the kernel's phases, interleaved.

    `y` is `(N, C_in, *spatial)`, `w` is `(C_in, C_out // groups, *kernel)`; the result equals
    `conv_transpose_vjp_form(y, w, spec)` (PyTorch's numbers) for every spec.

    Args:
        y: canonical input.
        w: canonical transposed-conv kernel.
        spec: the canonical `Spec`.

    Returns:
        `(N, C_out, *out_spatial)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from transconv_jax._spec import Spec
        >>> spec = Spec(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
        >>> conv_transpose_subpixel_form(jnp.array([[[1.0, 2.0]]]), jnp.array([[[1.0, 10.0, 100.0]]]), spec)
        Array([[[  1.,  10., 102.,  20., 200.]]], dtype=float32)
    """
    axes = _plan(y.shape[2:], w.shape[2:], spec)
    if all(a.fused for a in axes):
        phases = _fused(y, w, axes, spec)
    else:
        phases = _per_phase(y, w, axes, spec)
    return _interleave(phases, axes)


def _plan(spatial, kernel, spec: Spec) -> tuple[_Axis, ...]:
    out = transpose_spatial(spatial, kernel, spec)
    return tuple(
        _plan_axis(n, k, s, d, lo, t)
        for n, k, s, d, (lo, _), t in zip(spatial, kernel, spec.stride, spec.dilation, spec.padding, out)
    )


def _plan_axis(n: int, k: int, s: int, d: int, lo: int, t: int) -> _Axis:
    """Rows `q` in `[lo // s, ceil((lo + t) / s))` of every phase cover the `t` output rows."""
    first, rows = lo // s, -(-(lo + t) // s) - lo // s
    step = d // math.gcd(s, d)
    phases = []
    for r in range(s):
        taps = [j for j in range(k) if (j * d) % s == r]
        if not taps:
            phases.append(_Phase((), 1, (0, 0)))
            continue
        span = (len(taps) - 1) * step
        low = (taps[0] * d - r) // s + span - first
        phases.append(_Phase(tuple(reversed(taps)), step, (low, rows - n - low + span)))
    return _Axis(tuple(phases), rows, (lo % s, rows * s - lo % s - t))


def _fused(y: jax.Array, w: jax.Array, axes, spec: Spec) -> jax.Array:
    """All phases in one convolution: kernel `(G * C_out/G * s^dims, C_in/G, *taps)`."""
    nd, g = len(axes), spec.groups
    for i, a in enumerate(axes):  # axis 2 + 2 i of w becomes (s, taps)
        w = jnp.take(w, np.array([p.taps for p in a.phases]), axis=2 + 2 * i)
    c_in, c_og = w.shape[:2]
    w = w.reshape(g, c_in // g, c_og, *w.shape[2:])
    w = w.transpose(0, 2, *range(3, 3 + 2 * nd, 2), 1, *range(4, 4 + 2 * nd, 2))
    w = w.reshape(-1, c_in // g, *w.shape[3 + nd :])
    first = [a.phases[0] for a in axes]
    out = phase_conv(_pad(y, [p.pad for p in first]), w, tuple(p.dilation for p in first), g, spec.precision)
    n = out.shape[0]
    return out.reshape(n, g * c_og, -1, *out.shape[2:])


def _per_phase(y: jax.Array, w: jax.Array, axes, spec: Spec) -> jax.Array:
    """One exact convolution per combination of per-axis phases; zeros where no tap lands."""
    c_out = w.shape[1] * spec.groups
    outs = []
    for combo in itertools.product(*(a.phases for a in axes)):
        shape = (y.shape[0], c_out, *(a.rows for a in axes))
        if any(not p.taps for p in combo):
            outs.append(jnp.zeros(shape, y.dtype))
            continue
        wp = w
        for i, p in enumerate(combo):
            wp = jnp.take(wp, np.array(p.taps), axis=2 + i)
        wp = _as_conv_kernel(wp, spec.groups)
        outs.append(phase_conv(_pad(y, [p.pad for p in combo]), wp, tuple(p.dilation for p in combo), spec.groups, spec.precision))
    return jnp.stack(outs, axis=2)


def _as_conv_kernel(w: jax.Array, groups: int) -> jax.Array:
    """`(C_in, C_out // g, *k)` to the conv kernel `(C_out, C_in // g, *k)` (no flip)."""
    c_in, c_og, *k = w.shape
    w = w.reshape(groups, c_in // groups, c_og, *k).swapaxes(1, 2)
    return w.reshape(groups * c_og, c_in // groups, *k)


def _interleave(phases: jax.Array, axes) -> jax.Array:
    """Depth-to-space: `(N, C, prod(s), *rows)` to `(N, C, *rows * s)`, then crop each axis."""
    nd, strides = len(axes), [len(a.phases) for a in axes]
    n, c = phases.shape[:2]
    x = phases.reshape(n, c, *strides, *phases.shape[3:])
    x = x.transpose(0, 1, *itertools.chain.from_iterable((2 + nd + i, 2 + i) for i in range(nd)))
    x = x.reshape(n, c, *(a.rows * s for a, s in zip(axes, strides)))
    return _pad(x, [(-lo, -hi) for lo, hi in (a.crop for a in axes)])


def _pad(x: jax.Array, pads) -> jax.Array:
    """Zero-pad (or crop, where negative) the spatial axes."""
    if all(p == (0, 0) for p in pads):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] * 2 + [(lo, hi, 0) for lo, hi in pads])


# ------------------------------------------------------------------- the stride-1 phase conv


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def phase_conv(x: jax.Array, w: jax.Array, dilation: tuple[int, ...], groups: int, precision) -> jax.Array:
    """A VALID stride-1 correlation, `x (N, C_in, *n)` with `w (C_out, C_in // g, *taps)`."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,) * len(dilation),
        padding=((0, 0),) * len(dilation),
        rhs_dilation=dilation,
        dimension_numbers=_NCX[len(dilation)],
        feature_group_count=groups,
        precision=precision,
    )


@phase_conv.defjvp
def _phase_conv_jvp(dilation, groups, precision, primals, tangents):
    x, w = primals
    tx, tw = tangents
    out = phase_conv(x, w, dilation, groups, precision)
    tangent = phase_conv(tx, w, dilation, groups, precision) + _tap_matmuls(x, tw, dilation, groups, precision)
    return out, tangent


@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _tap_matmuls(x: jax.Array, w: jax.Array, dilation, groups: int, precision) -> jax.Array:
    """The same correlation as one matrix product per tap; linear in `w`, whose transpose is
    one GEMM per tap of a shifted `x` against the cotangent. `jax.checkpoint` keeps only `x`."""
    n, c_in = x.shape[:2]
    c_out, taps = w.shape[0], w.shape[2:]
    rows = tuple(m - d * (k - 1) for m, d, k in zip(x.shape[2:], dilation, taps))
    xg = x.reshape(n, groups, c_in // groups, *x.shape[2:])
    wg = w.reshape(groups, c_out // groups, c_in // groups, *taps)
    out = None
    for tap in itertools.product(*(range(k) for k in taps)):
        start = (0, 0, 0, *(t * d for t, d in zip(tap, dilation)))
        window = lax.slice(xg, start, tuple(s + e for s, e in zip(start, (n, groups, c_in // groups, *rows))))
        term = jnp.einsum("ngc...,goc->ngo...", window, wg[(..., *tap)], precision=precision)
        out = term if out is None else out + term
    return out.reshape(n, c_out, *rows)
