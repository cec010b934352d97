"""The fast form: a stride-`s` transposed convolution as stride-1 convolutions of the kernel's phases.

Output row `u` of the full (uncropped) transposed convolution receives `y[i] * w[k]` where
`u = i s + k d`. Write `u = q s + r`: the rows of phase `r` (`0 <= r < s`) receive only the taps
`k` with `k d = r (mod s)`, and for them `i = q - (k d - r) / s`, so phase `r` is an ordinary
stride-1 correlation of `y` with those taps (flipped, dilated by `d / gcd(s, d)`). The phases
are re-cut on the cropped output's grid (`_align`) and interleaved by depth-to-space.
When every phase has the same taps layout (every kernel size a multiple of its stride, no
dilation) all phases are one convolution with `s^dims * C_out` output channels plus one reshape;
otherwise there is one exact convolution per phase. Nothing is multiplied by an inserted zero.

Grouped, the phase convolution itself is that im2col GEMM (below) while it fits, not XLA:CPU's
grouped convolution.

Gradients: the phase convolution has a `jax.custom_jvp` whose tangents are matrix products
(`_tap_matmuls`, under `jax.checkpoint`): while the shifted windows of the input fit in
`_SCAN_BYTES`, im2col, i.e. the windows side by side as one `(rows, taps * C_in)` matrix times
the kernel as one `(taps * C_in, C_out)` matrix; otherwise one product per tap in a `lax.scan`.
Reverse mode transposes them into GEMMs: the kernel gradient is `windows^T cotangent` (XLA:CPU's
own weight gradient of a padded convolution is far slower) and the input gradient
`cotangent kernel^T` followed by col2im (one shifted add per tap); past `_SCAN_BYTES` the input
gradient is the stride-1 convolution that transposes the phase conv. Forward mode works too.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._conv import bilinear_tangent, pad_spatial, regroup_kernel, zero_pad
from ._shuffle import interleave
from ._spec import Spec, accumulation_dtype, lax_layout, transpose_spatial


@dataclasses.dataclass(frozen=True)
class Phase:
    """One output phase `r` of one axis: its taps (flipped), their dilation and the input padding."""

    taps: tuple[int, ...]
    dilation: int
    pad: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Axis:
    """The phase decomposition of one spatial axis: `s` phases over `q` rows, then a crop."""

    phases: tuple[Phase, ...]
    rows: int
    crop: tuple[int, int]

    @property
    def size(self) -> int:
        """The output rows `t`."""
        return self.rows * len(self.phases) - sum(self.crop)

    @property
    def out_rows(self) -> int:
        """Rows per phase of the output's own grid, `ceil(t / s)`."""
        return -(-self.size // len(self.phases))

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
        `(N, C_out, *out_spatial)` in the accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from transconv_jax._spec import Spec
        >>> spec = Spec(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
        >>> conv_transpose_subpixel_form(jnp.array([[[1.0, 2.0]]]), jnp.array([[[1.0, 10.0, 100.0]]]), spec)
        Array([[[  1.,  10., 102.,  20., 200.]]], dtype=float32)
    """
    axes = plan(y.shape[2:], w.shape[2:], spec)
    y = jnp.moveaxis(y, 1, -1)  # channels-last inside: XLA:CPU's convolutions and GEMMs want it
    if all(a.fused for a in axes):  # the test of `phases_fuse`
        phases = _fused(y, w, axes, spec)
    else:
        phases = _per_phase(y, w, axes, spec)
    full = interleave(_align(phases, axes), "N" + "X" * len(axes) + "CP", [len(a.phases) for a in axes])
    return pad_spatial(full, [(0, a.size - a.out_rows * len(a.phases)) for a in axes])


def phases_fuse(spatial, kernel, spec: Spec) -> bool:
    """Whether the subpixel form is one convolution: every phase of every axis has the same taps layout.

    Example:
        >>> phases_fuse((16, 16), (4, 4), Spec((2, 2), ((1, 1), (1, 1)), (1, 1), 1))
        True
    """
    return all(a.fused for a in plan(spatial, kernel, spec))


def plan(spatial, kernel, spec: Spec) -> tuple[Axis, ...]:
    """The phase decomposition of every spatial axis of a transposed convolution (see the module's docstring)."""
    out = transpose_spatial(spatial, kernel, spec)
    return tuple(
        plan_axis(n, k, s, d, lo, t)
        for n, k, s, d, (lo, _), t in zip(spatial, kernel, spec.stride, spec.dilation, spec.padding, out, strict=False)
    )


def plan_axis(n: int, k: int, s: int, d: int, lo: int, t: int) -> Axis:
    """Rows `q` in `[lo // s, ceil((lo + t) / s))` of every phase cover the `t` output rows."""
    first, rows = lo // s, -(-(lo + t) // s) - lo // s
    step = d // math.gcd(s, d)
    phases = []
    for r in range(s):
        taps = [j for j in range(k) if (j * d) % s == r]
        if not taps:
            phases.append(Phase((), 1, (0, 0)))
            continue
        span = (len(taps) - 1) * step
        low = (taps[0] * d - r) // s + span - first
        phases.append(Phase(tuple(reversed(taps)), step, (low, rows - n - low + span)))
    return Axis(tuple(phases), rows, (lo % s, rows * s - lo % s - t))


def _fused(y: jax.Array, w: jax.Array, axes, spec: Spec) -> jax.Array:
    """All phases in one convolution, kernel `(*taps, C_in/G, G * C_out/G * s^dims)`; returns
    `(N, *rows, C_out, prod(s))`."""
    nd, g = len(axes), spec.groups
    for i, a in enumerate(axes):  # axis 2 + 2 i of w becomes (s, taps)
        w = _phase_taps(w, a, 2 + 2 * i)
    c_in, c_og = w.shape[:2]
    w = w.reshape(g, c_in // g, c_og, *w.shape[2:])
    w = w.transpose(*range(4, 4 + 2 * nd, 2), 1, 0, 2, *range(3, 3 + 2 * nd, 2))
    w = w.reshape(*w.shape[:nd], c_in // g, -1)
    first = [a.phases[0] for a in axes]
    out = phase_conv(y, w, _phase_spec(first, y.dtype, spec))
    return out.reshape(*out.shape[:-1], g * c_og, out.shape[-1] // (g * c_og))  # no -1: the batch may be empty


def _per_phase(y: jax.Array, w: jax.Array, axes, spec: Spec) -> jax.Array:
    """One exact convolution per combination of per-axis phases; zeros where no tap lands."""
    shape = (y.shape[0], *(a.rows for a in axes), w.shape[1] * spec.groups)
    outs = []
    for combo in itertools.product(*(a.phases for a in axes)):
        if any(not p.taps for p in combo):
            outs.append(jnp.zeros(shape, accumulation_dtype(y.dtype, spec.preferred_element_type)))
            continue
        wp = w
        for i, p in enumerate(combo):
            wp = take_taps(wp, p.taps, 2 + i)
        outs.append(phase_conv(y, _hwio(wp, spec.groups), _phase_spec(combo, y.dtype, spec)))
    return jnp.stack(outs, axis=-1)


def _phase_taps(w: jax.Array, axis_plan: Axis, axis: int) -> jax.Array:
    """Kernel axis `axis` (size `k`) as `(s, taps)`: the taps of every phase, flipped.

    One `take_taps` per phase, stacked; where phase `r`'s taps are `r, r + s, ...` (no dilation),
    a reshape to `(k / s, s)`, a reverse and a swap instead, which XLA compiles as one copy (fewer
    ops to compile on FCN-8s's 8 phases per axis). With two phases the forward keeps the stack
    (the reshape raised XLA's temp buffers on the memory layer of BENCHMARKS.md, both measured
    there) and only its tangent is the reshape, so the kernel gradient puts the taps back in one
    copy instead of one pad per phase and axis (2 fewer compiled ops on DCGAN's k4 s2).
    """
    s, k = len(axis_plan.phases), w.shape[axis]
    if not all(p.taps == tuple(range(r, k, s))[::-1] for r, p in enumerate(axis_plan.phases)):
        return _stacked_taps(w, axis_plan, axis)
    if s > 2:
        return _reshaped_taps(w, s, axis)
    return _stacked_taps_reshaped_tangent(w, axis_plan, axis)


def _stacked_taps(w: jax.Array, axis_plan: Axis, axis: int) -> jax.Array:
    return jnp.stack([take_taps(w, p.taps, axis) for p in axis_plan.phases], axis=axis)


def _reshaped_taps(w: jax.Array, s: int, axis: int) -> jax.Array:
    w = lax.rev(w.reshape(*w.shape[:axis], w.shape[axis] // s, s, *w.shape[axis + 1 :]), (axis,))
    return jnp.swapaxes(w, axis, axis + 1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _stacked_taps_reshaped_tangent(w: jax.Array, axis_plan: Axis, axis: int) -> jax.Array:
    """`_stacked_taps`, whose tangent is `_reshaped_taps`, the same permutation of the kernel: the
    kernel gradient then gathers the phases' taps back in one copy, not one pad per phase."""
    return _stacked_taps(w, axis_plan, axis)


@_stacked_taps_reshaped_tangent.defjvp
def _stacked_taps_jvp(axis_plan, axis, primals, tangents):
    out = _stacked_taps_reshaped_tangent(*primals, axis_plan, axis)
    return out, _reshaped_taps(*tangents, len(axis_plan.phases), axis)


def take_taps(w: jax.Array, taps: tuple[int, ...], axis: int) -> jax.Array:
    """`w`'s kernel entries `taps` along `axis`, in that order: a strided slice and a reverse, no gather.

    The taps of a phase are an arithmetic progression (`j = j0 (mod s / gcd(s, d))`), listed
    descending (flipped). Static slices transpose to pads, where a gather's transpose is a
    scatter-add, slower to compile and to run (the kernel gradient).

    Example:
        >>> take_taps(jnp.arange(5.0), (4, 2, 0), 0)
        Array([4., 2., 0.], dtype=float32)
    """
    step = taps[0] - taps[1] if len(taps) > 1 else 1
    assert taps == tuple(range(taps[0], taps[-1] - 1, -step)), taps  # plan_axis's progression
    return lax.rev(lax.slice_in_dim(w, taps[-1], taps[0] + 1, stride=step, axis=axis), (axis,))


def _align(phases: jax.Array, axes) -> jax.Array:
    """The phases of the uncropped grid, `(N, *rows, C, P)`, re-cut on the cropped output's grid.

    Output row `u` is row `u + lo % s` of the uncropped phases' grid, so output phase `r` is
    uncropped phase `(r + lo % s) % s` from row `(r + lo % s) // s` on, `ceil(t / s)` rows. Cutting
    per phase before the interleave, with static slices, keeps the sharded rows axis major and
    evenly split in the interleave's reshape; cropping after it made GSPMD all-gather the output.

    Up to `_ALIGN_PHASES` phases, the phases are split apart first (`lax.split`, whose transpose
    is one concatenate), each output phase (every axis at once) is one static slice of its own
    phase, and they are stacked: XLA fuses the stack into one copy, and its transpose (each
    phase's cotangent padded into its own phase, concatenated) into one more. Slicing every phase
    out of the whole array instead made the transpose a sum of one whole-array pad per phase (4
    activation-sized pads on the grouped layer: its fwd+bwd took 2.5x as long). With more phases
    (FCN-8s's 64) each axis is re-cut in turn: two slices and a concatenate per axis.
    """
    nd = len(axes)
    sizes = [len(a.phases) for a in axes]
    if phases.shape[-1] <= _ALIGN_PHASES:
        pieces = lax.split(phases, (1,) * phases.shape[-1], axis=phases.ndim - 1)
        parts = []
        for combo in itertools.product(*map(range, sizes)):
            source = [(r + a.crop[0]) % len(a.phases) for r, a in zip(combo, axes, strict=True)]
            part = lax.squeeze(pieces[int(np.ravel_multi_index(source, sizes))], (phases.ndim - 1,))
            for i, (r, a) in enumerate(zip(combo, axes, strict=True)):
                part = _shift_rows(part, 1 + i, (r + a.crop[0]) // len(a.phases), a.out_rows)
            parts.append(part)
        return jnp.stack(parts, axis=-1)
    x = phases.reshape(*phases.shape[:-1], *sizes)
    for i, a in enumerate(axes):
        s, lo, phase_axis = len(a.phases), a.crop[0], 2 + nd + i
        # output phases 0 .. s - lo - 1 are uncropped phases lo .. s - 1 from row 0; the last lo
        # output phases are uncropped phases 0 .. lo - 1 from row 1: two slices, one concatenate
        parts = [(lax.slice_in_dim(x, lo, s, axis=phase_axis), 0)]
        parts += [(lax.slice_in_dim(x, 0, lo, axis=phase_axis), 1)] if lo else []
        x = jnp.concatenate([_shift_rows(p, 1 + i, shift, a.out_rows) for p, shift in parts], axis=phase_axis)
    return x.reshape(*x.shape[: 2 + nd], math.prod(x.shape[2 + nd :]))  # no -1: the batch may be empty


_ALIGN_PHASES = 8  # up to this many phases, `_align` cuts each phase at once (see its docstring)


def _shift_rows(x: jax.Array, axis: int, shift: int, rows: int) -> jax.Array:
    """Rows `shift .. shift + rows - 1` of `x` along `axis` (zeros past its end)."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (-shift, rows + shift - x.shape[axis], 0)
    return zero_pad(x, config)


def _hwio(w: jax.Array, groups: int) -> jax.Array:
    """`(C_in, C_out // g, *k)` to the channels-last conv kernel `(*k, C_in // g, C_out)` (no flip)."""
    w = regroup_kernel(w, groups)
    return w.transpose(*range(2, w.ndim), 1, 0)


# ------------------------------------------------------------------- the stride-1 phase conv


@dataclasses.dataclass(frozen=True)
class _Conv:
    """A stride-1 channels-last correlation: input padding (may be negative), kernel dilation, and
    the accumulation dtype (None: the operands')."""

    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    precision: Any = None
    acc: Any = None


def _phase_spec(phases, dtype, spec: Spec) -> _Conv:
    acc = accumulation_dtype(dtype, spec.preferred_element_type)
    acc = None if acc == np.dtype(dtype) else acc
    return _Conv(tuple(p.pad for p in phases), tuple(p.dilation for p in phases), spec.groups, spec.precision, acc)


def _valid_conv(x: jax.Array, w: jax.Array, conv: _Conv, acc) -> jax.Array:
    """`lax.pad` by `conv.pads`, then a VALID stride-1 channels-last convolution accumulated in `acc`."""
    return lax.conv_general_dilated(
        pad_spatial(x, conv.pads, channels_last=True),
        w,
        window_strides=(1,) * len(conv.dilation),
        padding=((0, 0),) * len(conv.dilation),
        rhs_dilation=conv.dilation,
        dimension_numbers=lax_layout(len(conv.dilation), channels_last=True),
        feature_group_count=conv.groups,
        precision=conv.precision,
        preferred_element_type=acc,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def phase_conv(x: jax.Array, w: jax.Array, conv: _Conv) -> jax.Array:
    """`x (N, *n, C_in)` padded by `conv.pads`, correlated with `w (*taps, C_in // g, C_out)`.

    The padding is an explicit `lax.pad` before a VALID convolution: the input gradient is then
    a fully padded conv and a slice, which XLA:CPU runs faster than the conv with the complementary
    padding that padding inside the conv would give (on DCGAN 32x32 when this was written).
    Half-precision operands accumulate in `conv.acc`; the tangent (hence both gradients) runs on
    operands of their own dtype, as `_conv.accumulate` explains. Grouped, while im2col fits, the
    forward is `_tap_matmuls`' batched GEMM instead of XLA:CPU's grouped convolution, which was
    slower (the grouped layer of BENCHMARKS.md). In 3-D, lowered for CPU, it is `_tap_matmuls`'
    im2col GEMM too while the padded input's windows fit `_SCAN_BYTES` (XLA:CPU's 3-D
    convolutions ran several times slower: BENCHMARKS.md, "3-D stride-1 layers"; past that, its
    scan over the taps slices the input at dynamic offsets, which made GSPMD all-gather a
    spatially sharded input); other platforms keep the convolution.
    """
    if conv.groups > 1 and _im2col_fits(x, w):
        return _tap_matmuls(x, w, conv, conv.acc)
    if len(conv.dilation) == 3 and _im2col_fits(x, w, conv.pads):
        gemms = lambda x, w: _tap_matmuls(x, w, conv, conv.acc)  # noqa: E731
        return lax.platform_dependent(x, w, cpu=gemms, default=lambda x, w: _valid_conv(x, w, conv, conv.acc))
    return _valid_conv(x, w, conv, conv.acc)


@functools.partial(phase_conv.defjvp, symbolic_zeros=True)
def _phase_conv_jvp(conv, primals, tangents):
    x, w = primals
    tx, tw = tangents
    out = phase_conv(x, w, conv)
    small = _im2col_fits(x, w)
    dx = (lambda tx: _tap_matmuls(tx, w, conv, None)) if small else (lambda tx: _valid_conv(tx, w, conv, None))
    return out, bilinear_tangent(out, (dx, tx), (lambda tw: _tap_matmuls(x, tw, conv, None), tw))


_SCAN_BYTES = 32 * 2**20  # windows of more bytes than this run one tap at a time, in a scan


def _im2col_fits(x: jax.Array, w: jax.Array, pads=None) -> bool:
    """Whether the `taps` shifted windows of `x (N, *n, C)`, padded by `pads` if given (im2col),
    take at most `_SCAN_BYTES`."""
    return _windows_fit(x.shape, math.prod(w.shape[:-2]), x.dtype.itemsize, pads)


def _windows_fit(x_shape, taps: int, itemsize: int, pads=None) -> bool:
    """`_im2col_fits` from shapes: `taps` windows of `(N, *n, C)`, each axis of `n` padded by `pads`."""
    pads = pads or ((0, 0),) * (len(x_shape) - 2)
    size = x_shape[0] * x_shape[-1] * math.prod(m + sum(p) for m, p in zip(x_shape[1:-1], pads, strict=True))
    return taps * size * itemsize <= _SCAN_BYTES


def stride_1_windows_fit(y_shape, w_shape, spec: Spec, itemsize: int) -> bool:
    """`_im2col_fits` for a stride-1 layer from its canonical shapes (its one phase per axis, `plan`):
    whether the gradients' shifted windows of the padded input take at most `_SCAN_BYTES`.

    Example:
        >>> spec = Spec((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        >>> stride_1_windows_fit((8, 128, 32, 32), (128, 64, 3, 3), spec, 4)  # 9 x 8 x 34 x 34 x 128 x 4 bytes
        False
    """
    n, c_in, *spatial = y_shape
    phases = [a.phases[0] for a in plan(spatial, w_shape[2:], spec)]
    taps = math.prod(len(p.taps) for p in phases)
    return _windows_fit((n, *spatial, c_in), taps, itemsize, [p.pad for p in phases])


def _tap_matmuls(x: jax.Array, w: jax.Array, conv: _Conv, acc) -> jax.Array:
    """The same correlation as matrix products over shifted windows of `x`: im2col, or one per tap.

    Bilinear. While `taps` windows fit in `_SCAN_BYTES` they are stacked into one matrix and the
    correlation is one GEMM against the kernel read as `(taps * C_in, C_out)`, a reshape of its
    own layout: a `dot_general` contracting only the last axis, so XLA:CPU runs it and both of
    its transposes (the two gradients) without copying the cotangent (an einsum over the spatial
    axes made it copy the cotangent to `(C_out, rows)` first; BENCHMARKS.md), while the batch and
    spatial axes stay apart for GSPMD (flattened, a spatially sharded input's gradients were
    all-gathered). Larger `x`, one tap at a time in a `lax.scan`, so that one window exists at a
    time. Under `jax.checkpoint`, only `x` is kept. `acc`: the products' `preferred_element_type`
    (None in the tangents, whose operands keep their dtype).
    """
    xg, wg, spec = _tap_operands(x, w, conv)
    chan = xg.ndim - x.ndim + 1  # trailing channel axes of xg: (C,) or (G, C // G)
    rows = tuple(m - d * (k - 1) for m, d, k in zip(xg.shape[1:-chan], conv.dilation, w.shape[:-2], strict=False))
    starts = [
        (0, *(t * d for t, d in zip(tap, conv.dilation, strict=False)), *(0,) * chan)
        for tap in itertools.product(*map(range, w.shape[:-2]))
    ]
    size = (x.shape[0], *rows, *xg.shape[-chan:])

    def term(start, wt):
        if isinstance(start, tuple):  # static: a plain slice
            window = lax.slice(xg, start, tuple(a + b for a, b in zip(start, size, strict=False)))
        else:
            window = lax.dynamic_slice(xg, start, size)
        return jnp.einsum(spec, window, wt, precision=conv.precision, preferred_element_type=acc)

    if _im2col_fits(xg, w):  # im2col: one GEMM over every tap
        ends = lambda start: tuple(a + b for a, b in zip(start, size, strict=False))  # noqa: E731
        cols = jnp.stack([lax.slice(xg, start, ends(start)) for start in starts], axis=xg.ndim - chan)
        if conv.groups == 1:  # in effect two matrices, `(rows, taps * C_in) x (taps * C_in, C_out)`: no copies
            matrix = cols.reshape(*cols.shape[:-2], math.prod(cols.shape[-2:]))  # (N, *rows, taps * C_in)
            dims = (((matrix.ndim - 1,), (0,)), ((), ()))
            out = lax.dot_general(matrix, w.reshape(matrix.shape[-1], -1), dims, conv.precision, acc)
        else:  # one product per group, the group axis major in both operands (written out, as above)
            g, c = cols.shape[-2:]
            batched = jnp.moveaxis(cols, -2, 0).reshape(g, -1, cols.shape[-3] * c)  # (G, rows, taps * C_in/G)
            kernel = jnp.moveaxis(wg, 2, 0).reshape(g, -1, wg.shape[-1])  # (G, taps * C_in/G, C_out/G)
            prod = lax.dot_general(batched, kernel, (((2,), (1,)), ((0,), (0,))), conv.precision, acc)
            out = jnp.moveaxis(prod, 0, -2)  # (rows, G, C_out/G)
    else:  # the first tap starts the sum (its type, sharding included, is the carry's), the rest scan
        offsets = np.asarray(starts[1:], np.int32).T  # per axis of xg, the other taps' starts
        moving = [axis for axis, o in enumerate(offsets) if o.any()]

        def step(total, tap):
            start = [0] * xg.ndim  # a list of scalars, as `lax.dynamic_slice` documents its indices
            for axis, offset in zip(moving, tap[0], strict=True):
                start[axis] = offset
            return total + term(start, tap[1]), None

        taps = (tuple(jnp.asarray(offsets[axis]) for axis in moving), wg[1:])
        out, _ = lax.scan(jax.checkpoint(step), term(starts[0], wg[0]), taps)
    return out.reshape(*size[:-chan], w.shape[-1])


def _tap_operands(x: jax.Array, w: jax.Array, conv: _Conv):
    """The padded input, the kernel as one matrix per tap, and the einsum of one tap.

    With one group there is no group axis and the kernel is `(taps, C_out, C_in)`, so that the
    kernel gradient of a tap is `cotangent^T window` with no transpose after it: XLA:CPU then runs
    it as a plain GEMM and keeps the cotangent and the padded input without copies. A size-1 group
    axis made XLA copy both (more temporary memory on the memory layer of BENCHMARKS.md) and
    `(taps, C_in, C_out)` made the GEMM a slower transposed one.
    """
    xg, g = pad_spatial(x, conv.pads, channels_last=True), conv.groups
    if g == 1:
        return xg, jnp.swapaxes(w.reshape(-1, *w.shape[-2:]), 1, 2), "n...c,oc->n...o"
    xg = xg.reshape(*xg.shape[:-1], g, xg.shape[-1] // g)
    return xg, w.reshape(-1, w.shape[-2], g, w.shape[-1] // g), "n...gc,cgo->n...go"


_tap_matmuls = jax.checkpoint(_tap_matmuls, static_argnums=(2, 3))
