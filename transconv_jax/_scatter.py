"""The scatter form: every input element, times the kernel, is added into a window of the output.

This is the picture that defines the transposed convolution, computed the way PyTorch's CPU
fallback and Caffe's Deconvolution layer compute it: a GEMM, then col2im.

1. GEMM. One contraction over the input channels of each group,
   `(N * spatial, C_in / g) x (C_in / g, taps * C_out / g)`, gives for every input element the
   kernel scaled by that element (the "columns"), split into one `(C_out, N, *spatial)` array
   per kernel tap (channels first, as the GEMM writes them).
2. col2im. Tap `t` of input element `i` lands at `s * i + d * t` of the full, uncropped output,
   i.e. at row `s * i + d * t - lo` of the cropped one (`lo` the low `padding`). Write
   `d * t - lo = q * s + r`: the tap fills every `s`-th output row from `s * q + r`, i.e. rows
   `i + q` of output phase `r` (the output seen as `(blocks, s)`, `blocks = ceil(out / s)`). So
   each tap is one contiguous `lax.pad` (negative where the crop cuts it) into the `blocks`-long
   array of its phase, the taps of a phase are summed, and the phases are interleaved (a stack,
   a transpose and a reshape); only rows past the end, when `s` does not divide the output, are
   cut after it. The adds run over the phase arrays, `1 / s` of the output per axis: never over
   the zeros that a stride would insert between input elements.

   One device. Where nothing can be sharded (`unpartitioned`), the GEMM's operands and the
   axis-by-axis passes below are reshaped to fewer axes, which XLA:CPU compiles and runs faster
   (`_columns`, `_add_taps_of_axis`); with more devices every axis stays apart, as follows.

   Sharding. The phases are laid out on the cropped output's grid, so that an output sharded
   evenly on a spatial axis is `blocks` rows sharded evenly (when the shard count divides
   `blocks`) with the phase axis minor: GSPMD then partitions the pads (halo exchange), the
   stack and the interleave's reshape without gathering. Phases of the uncropped grid (one row
   more per axis, cropped after the interleave) made GSPMD all-gather the whole output.

Channels-last callers (`Spec.channels_last`: the Flax layers). Where taps do not overlap (U-Net's
and V-Net's k2 s2, any rank) the form runs channels-last (`blocks_channels_last`), and so do
overlapping taps in 1-D and 2-D (`_columns_channels_last`, then col2im on `(N, *spatial, *kernel,
C)`), so that its transposes cancel those into and out of the canonical layout. 3-D keeps the
canonical path: its channels-last backward was slower (BENCHMARKS.md, "Channels-last").

Python loops run over kernel taps only (static), never over pixels or batch; nothing multiplies
an inserted zero, and no `lhs_dilation` is lowered (so XLA:CPU's strided-dilated abort cannot
occur). Autodiff gives the im2col backward: the cotangent split into phases, one contiguous
slice per tap, concatenated, then two GEMMs. Where it measured faster or compiled fewer ops
(`transposes_by_axis`: wherever taps overlap) the slices are taken axis by axis instead,
`sum(kernel)` of them rather than `prod(kernel)`, each a compiled op of its own
(`col2im_by_axis`, the tangent of `_col2im`). On kernels of many taps (`adds_by_axis`: 3-D k3,
FCN-8s's k16, DCGAN's k4 s2) the value of a differentiated layer is added axis by axis too, which
LLVM compiles much faster where XLA materializes it before a bias and an activation; inference
keeps the one pass.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ._conv import accumulate, pad_spatial, zero_pad
from ._shuffle import interleave, reshape, unpartitioned
from ._spec import Spec, accumulation_dtype, overlaps, transpose_spatial

_SPATIAL = "stu"  # einsum letters of the spatial axes, up to 3-D


def conv_transpose_scatter_form(y: jax.Array, w: jax.Array, spec: Spec, differentiated: bool = False) -> jax.Array:
    """`W.T @ y` as a GEMM (each input element times the kernel) and col2im (one add per tap).

    Args:
        y: `(N, C_in, *spatial)`.
        w: `(C_in, C_out // groups, *kernel)`, PyTorch's ConvTranspose weight layout.
        spec: the canonical `Spec`; `padding` is the crop of the full output (negative `high`
            extends it).
        differentiated: the value as the form computes it under a gradient (`adds_by_axis`), for
            `method="auto"`, which takes its derivatives elsewhere.

    Returns:
        `(N, C_out, *out_spatial)` with `out_spatial = transpose_spatial(spatial, kernel, spec)`, in the
        accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> spec = Spec(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
        >>> conv_transpose_scatter_form(jnp.array([[[1.0, 10.0]]]), jnp.array([[[1.0, 2.0, 3.0]]]), spec)
        Array([[[ 1.,  2., 13., 20., 30.]]], dtype=float32)
    """
    if spec.channels_last and not overlaps(w.shape[2:], spec):
        return blocks_channels_last(y, w, spec)
    out_spatial = transpose_spatial(y.shape[2:], w.shape[2:], spec)
    if one_element(y.shape[2:], spec):
        return _tile(y, w, spec)
    by_axis = differentiated and adds_by_axis(w.shape[2:], spec.stride)
    if spec.channels_last and spec.ndim <= 2:  # 3-D: the channels-last backward was slower (BENCHMARKS.md)
        out = (col2im_by_axis if by_axis else _col2im)(_columns_channels_last(y, w, spec), spec, out_spatial, True)
        return jnp.moveaxis(out, -1, 1)
    if by_axis:
        col2im = col2im_by_axis
    else:
        col2im = _col2im if transposes_by_axis(w.shape[2:], spec.stride) else col2im_by_tap
    return col2im(_columns(y, w, spec), spec, out_spatial)


def blocks_channels_last(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The scatter form where taps do not overlap (`kernel <= stride`, no dilation), computed channels-last.

    Every input element writes its own `stride`-sized block of the full output: one GEMM
    `(N * spatial, C_in / g) x (C_in / g, taps * C_out / g)` per group gives the blocks (taps past
    the kernel are zeros), a depth-to-space puts them in place with the channels last, and
    `padding` crops the result. Taken when the caller's arrays are channels-last
    (`Spec.channels_last`, the Flax layers): the transposes here, into and out of
    `(N, *spatial, C)`, cancel those of `conv_transpose` into and out of the canonical layout, so
    the GEMM reads the caller's input as it is and the output is written once, forward and
    backward (`benchmarks/channels_last.py`, BENCHMARKS.md). On channels-first arrays the
    canonical path (`_columns`, `col2im_by_tap`) was faster.

    Args and returns: as `conv_transpose_scatter_form` (canonical arrays).
    """
    nd, kernel = spec.ndim, w.shape[2:]
    blocks = _columns_channels_last(y, w, spec)  # (N, *spatial, *kernel, C_out)
    beyond = [(0, st - kt, 0) for kt, st in zip(kernel, spec.stride, strict=True)]  # taps past the kernel
    blocks = zero_pad(blocks, [(0, 0, 0)] * (1 + nd) + beyond + [(0, 0, 0)])
    full = interleave(_merge_taps(blocks, 1 + nd, nd), "N" + "X" * nd + "PC", spec.stride, channels_last=True)
    out_spatial = transpose_spatial(y.shape[2:], w.shape[2:], spec)
    crops = [
        (-lo, want - size + lo) for (lo, _), size, want in zip(spec.padding, full.shape[1:-1], out_spatial, strict=True)
    ]
    return jnp.moveaxis(pad_spatial(full, crops, channels_last=True), -1, 1)


def one_element(spatial: tuple[int, ...], spec: Spec) -> bool:
    """Whether the input has one element per example and channel, without dilation (a generator's first
    layer, 1x1 -> 4x4): its taps then tile the full output, which is the GEMM's columns as they are."""
    return all(n == 1 for n in spatial) and max(spec.dilation) == 1


def _tile(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The scatter form of a one-element input (`one_element`): the full output is the GEMM's columns,
    `(C, *kernel, N, *ones)` as `(N, C, *kernel)`, cropped by `padding` (extended with zeros where
    `high` is negative). For channels-last callers the columns are taken channels-last, `(N, *ones,
    *kernel, C)`, which is their output as it is: no transpose of the output, and one of the kernel
    from Flax's layout (through the canonical one, XLA:CPU fused two transposes into a kernel LLVM
    was slow to compile; BENCHMARKS.md, "Compile time: the im2col's rank")."""
    nd, pads = spec.ndim, [(-lo, -hi) for lo, hi in spec.padding]
    if spec.channels_last:
        cols = _columns_channels_last(y, w, spec)
        full = cols.reshape(cols.shape[0], *cols.shape[1 + nd :])
        return jnp.moveaxis(pad_spatial(full, pads, channels_last=True), -1, 1)
    cols = _columns(y, w, spec)
    full = cols.reshape(cols.shape[: 2 + nd]).transpose(1 + nd, 0, *range(1, 1 + nd))
    return pad_spatial(full, pads)


def transposes_by_axis(kernel: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether the backward's im2col is taken axis by axis (`_col2im`), a rule measured by
    `benchmarks/col2im_transpose.py` (BENCHMARKS.md): wherever taps overlap (`k > s` on an axis:
    DCGAN's k4 s2, the k3 s2 U-Nets, stride-1 layers, FCN-8s's k16 s8) it ran as fast or faster
    than one slice per tap and compiled fewer ops in less time, on every layer of the suite and on
    the stride-1 layers beyond it, since its passes run on four axes (`_add_taps_of_axis`). Also
    where a strided axis's phases have unequal taps (`k % s != 0`) or the kernel has many taps
    (`adds_by_axis`). Where no taps overlap (U-Net's and V-Net's k2 s2) each phase gets one tap,
    and by axis was no faster: one slice per tap stays."""
    uneven = any(s > 1 and k % s for k, s in zip(kernel, stride, strict=True))
    overlap = any(k > s for k, s in zip(kernel, stride, strict=True))
    return uneven or overlap or adds_by_axis(kernel, stride)


_SMALL_COLUMNS = 2**21  # elements: 8 MiB in float32


def small_columns(y_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int, limit: int = _SMALL_COLUMNS) -> bool:
    """Whether the columns (`_columns`: every input element times every kernel tap) have at most
    `limit` elements. On such layers (a DCGAN generator's up to 16x16 -> 32x32) the scatter form's
    gradients, which share the cotangent's columns, beat the other forms'; on the larger layers of
    the suite (HiFi-GAN: 2**21.6 elements, DCGAN 32x32: 2**23) subpixel's kernel gradient did
    (`benchmarks/derivatives.py`, BENCHMARKS.md; DCGAN 16x16, 2**22, is `auto`'s exception:
    `_dispatch.scatter_kernel_gradient`).

    Example:
        >>> small_columns((8, 128, 16, 16), (128, 64, 4, 4), 1)  # 8 * 16 * 16 * 16 taps * 64 = 2**21
        True
    """
    n, _, *spatial = y_shape
    _, c_out_g, *kernel = w_shape
    return n * math.prod(spatial) * math.prod(kernel) * c_out_g * groups <= limit


def _dot_general(a, b, acc, *, dimension_numbers, precision):
    return lax.dot_general(a, b, dimension_numbers, precision=precision, preferred_element_type=acc)


def _einsum(subscripts: str, a, b, acc, *, precision):
    return jnp.einsum(subscripts, a, b, precision=precision, preferred_element_type=acc)


def _batched_product(a: jax.Array, b: jax.Array, spec: Spec, acc) -> jax.Array:
    """`a (g, m, k) @ b (g, k, n)` per group, accumulated in `acc`: the GEMM of `_columns` and
    `_columns_channels_last` on one device."""
    dims = (((2,), (1,)), ((0,), (0,)))
    return accumulate(functools.partial(_dot_general, dimension_numbers=dims, precision=spec.precision), a, b, acc)


def _columns(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """The GEMM: `(C_out, *kernel, N, *spatial)`, every input element times every kernel tap.

    One product over `C_in / g` with the group as a batch axis, in the order the matrix product
    writes it (channels first: moving `N` to the front is left to the interleave's transpose,
    which moves the smaller output). Where nothing can be sharded (`unpartitioned`) it is a
    batched GEMM of the kernel, `(C_out / g * taps, C_in / g)`, and the input as `(C_in / g, N *
    prod(spatial))`: JAX writes the input gradient as a product of the cotangent's columns, as
    they are, and the kernel, which XLA:CPU runs with the columns transposed in place; with the
    input's axes apart (an einsum) XLA copied the columns into the transposed layout first, a
    pass as slow as the GEMM (BENCHMARKS.md, "The input gradient's columns").
    """
    n, c_in, *spatial = y.shape
    _, c_out_g, *kernel = w.shape
    g, taps, nd = spec.groups, math.prod(kernel), spec.ndim
    acc = accumulation_dtype(y.dtype, spec.preferred_element_type)
    if unpartitioned(y):
        wg = jnp.swapaxes(w.reshape(g, c_in // g, c_out_g * taps), 1, 2)
        yg = jnp.moveaxis(y, 0, 1).reshape(g, c_in // g, -1)  # (g, C_in / g, N * spatial)
        return _batched_product(wg, yg, spec, acc).reshape(g * c_out_g, *kernel, n, *spatial)
    s = _SPATIAL[:nd]
    yg = y.reshape(n, g, c_in // g, *spatial)
    wg = w.reshape(g, c_in // g, c_out_g, taps)
    product = functools.partial(_einsum, f"gcok,ngc{s}->gokn{s}", precision=spec.precision)
    cols = accumulate(product, wg, yg, acc)
    return reshape(cols, (g * c_out_g, *kernel, n, *spatial), (0, *(None,) * nd, 3, *range(4, 4 + nd)))


def _columns_channels_last(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`_columns` channels-last: `(N, *spatial, *kernel, C_out)`, for channels-last callers.

    One `dot_general` per group with the input first, so that the GEMM's rows are the input
    elements as a channels-last input holds them (`jnp.einsum` put the kernel first: XLA then
    transposed the input).
    """
    nd, g = spec.ndim, spec.groups
    n, c_in, *spatial = y.shape
    _, c_out_g, *kernel = w.shape
    acc = accumulation_dtype(y.dtype, spec.preferred_element_type)
    wg = jnp.moveaxis(w.reshape(g, c_in // g, c_out_g, *kernel), 2, -1)  # (g, C_in / g, *kernel, C_out / g)
    if unpartitioned(y):  # three-axis operands, as `_columns` (there: why)
        yl = jnp.moveaxis(jnp.moveaxis(y, 1, -1).reshape(-1, g, c_in // g), 1, 0)  # (g, N * spatial, C_in / g)
        cols = _batched_product(yl, wg.reshape(g, c_in // g, -1), spec, acc)  # (g, N * spatial, taps * C_out / g)
        cols = jnp.moveaxis(cols.reshape(g, n, *spatial, *kernel, c_out_g), 0, -2)
        return cols.reshape(*cols.shape[:-2], g * c_out_g)
    spatial_axes = tuple(range(1, 1 + nd))
    yl = reshape(jnp.moveaxis(y, 1, -1), (n, *spatial, g, c_in // g), (0, *spatial_axes, 1 + nd, None))
    dims = (((2 + nd,), (1,)), ((1 + nd,), (0,)))
    product = functools.partial(_dot_general, dimension_numbers=dims, precision=spec.precision)
    cols = accumulate(product, yl, wg, acc)
    cols = jnp.moveaxis(cols, 0, -2)  # (N, *spatial, *kernel, g, C_out / g)
    return reshape(cols, (*cols.shape[:-2], g * c_out_g), (*range(1 + 2 * nd), 1 + 2 * nd))


def _merge_taps(cols: jax.Array, first: int, nd: int) -> jax.Array:
    """The `nd` axes of `cols` from `first` on (kernel taps or phases) merged into one, row-major."""
    shape = (*cols.shape[:first], math.prod(cols.shape[first : first + nd]), *cols.shape[first + nd :])
    return reshape(cols, shape, (*range(first), None, *range(first + nd, cols.ndim)))


def _axes(nd: int, channels_last: bool) -> tuple[int, int]:
    """Where the first kernel-tap axis and the first row axis of the columns are:
    `(C, *kernel, N, *rows)`, or channels-last `(N, *rows, *kernel, C)`."""
    return (1 + nd, 1) if channels_last else (1, 2 + nd)


def col2im_by_tap(cols: jax.Array, spec: Spec, out_spatial: tuple[int, ...], channels_last: bool = False) -> jax.Array:
    """col2im: each tap of `cols` (`(C, *kernel, N, *spatial)`, or channels-last `(N, *spatial,
    *kernel, C)` giving `(N, *out_spatial, C)`) padded into its output phase, the phases
    interleaved. XLA fuses the pads, one per kernel tap, into the one pass that writes the output;
    its transpose, the backward's im2col of the cotangent, is one slice per tap, each its own op."""
    nd = spec.ndim
    blocks = _blocks(spec, out_spatial)
    first_tap, first_row = _axes(nd, channels_last)
    kernel = cols.shape[first_tap : first_tap + nd]
    flat = _merge_taps(cols, first_tap, nd)
    rows = first_row - nd if first_row > first_tap else first_row  # in a part: the columns without their taps
    parts = []
    taps = lax.split(flat, (1,) * flat.shape[first_tap], axis=first_tap)
    for col, tap in zip(taps, itertools.product(*map(range, kernel))):
        col = lax.squeeze(col, (first_tap,))
        sizes = col.shape[rows : rows + nd]
        placed = [_place(t, axis, spec, n, b) for axis, (t, n, b) in enumerate(zip(tap, sizes, blocks))]
        if None not in placed:
            pads = [(0, 0, 0)] * col.ndim
            pads[rows : rows + nd] = [p for _, p in placed]
            parts.append((tuple(r for r, _ in placed), zero_pad(col, pads)))
    phases = _sum_by_phase(parts)
    shape = list(flat.shape)
    del shape[first_tap]
    shape[rows : rows + nd] = blocks
    zeros = jnp.zeros(shape, cols.dtype)
    stacked = [phases.get(r, zeros) for r in itertools.product(*map(range, spec.stride))]
    if channels_last:
        return _interleave(jnp.stack(stacked, axis=-2), "N" + "X" * nd + "PC", spec, out_spatial, True)
    return _interleave(jnp.stack(stacked, axis=-1), "CN" + "X" * nd + "P", spec, out_spatial)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _col2im(cols: jax.Array, spec: Spec, out_spatial: tuple[int, ...], channels_last: bool = False) -> jax.Array:
    """`col2im_by_tap`, whose tangent is `col2im_by_axis`: the same linear map, so reverse mode
    takes the im2col of the cotangent axis by axis (`sum(kernel)` slices in one pass per axis)
    instead of one slice per tap, while the forward keeps the one fused pass. Channels-last, this
    is the only backward: one slice per tap of a channels-last cotangent was much slower on
    U-Net k3 s2 and DCGAN 16x16 (one-off checks)."""
    return col2im_by_tap(cols, spec, out_spatial, channels_last)


@_col2im.defjvp
def _col2im_jvp(spec, out_spatial, channels_last, primals, tangents):
    (cols,) = primals
    first_tap = _axes(spec.ndim, channels_last)[0]
    by_axis = adds_by_axis(cols.shape[first_tap : first_tap + spec.ndim], spec.stride)
    out = (col2im_by_axis if by_axis else _col2im)(cols, spec, out_spatial, channels_last)
    return out, col2im_by_axis(*tangents, spec, out_spatial, channels_last)


def adds_by_axis(kernel: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether col2im, differentiated, adds the taps axis by axis in its value too, not only in its
    tangent (`_col2im`'s rule; `method="auto"` asks with `differentiated`): where the kernel has at
    least three times as many taps as taps per axis, summed (3-D k3: 27 against 9; FCN-8s's 2-D
    k16: 256 against 32), or twice as many with every axis strided (DCGAN's 2-D k4 s2: 16 against
    8). Under a gradient XLA may materialize the sum by tap before what follows the layer (a bias
    and a ReLU, whose gradient reads their input again), and that one kernel of hundreds of ops
    (838 on the 3-D U-Net layer of BENCHMARKS.md, 449 on each k4 s2 layer of a DCGAN generator)
    took LLVM over a second to compile on the one, and most of `auto`'s extra compile time on the
    other; axis by axis it is a few kernels of at most 80 ops. The generator's training step ran
    as fast; a stride-1 k5 layer's fwd+bwd took 1.1x as long, so stride 1 keeps the sum by tap
    below three times. Undifferentiated (inference) the one fused pass by tap stays: axis by axis,
    the forward alone took twice as long (`benchmarks/profile_layer.py --codegen --bias-relu`,
    `benchmarks/ab.py --generator [--compile]`; BENCHMARKS.md).

    Example:
        >>> adds_by_axis((4, 4), (2, 2)), adds_by_axis((5, 5), (1, 1)), adds_by_axis((3, 3, 3), (1, 1, 1))
        (True, False, True)
    """
    taps, per_axis = math.prod(kernel), sum(kernel)
    return taps >= 3 * per_axis or (taps >= 2 * per_axis and min(stride) > 1)


def col2im_by_axis(cols: jax.Array, spec: Spec, out_spatial: tuple[int, ...], channels_last: bool = False) -> jax.Array:
    """`col2im_by_tap` one spatial axis at a time: per axis, its tap axis becomes its phase axis.

    `cols` is `(C, *lead, k, *rest, N, *rows)` at the pass over an axis (channels-last `(N, *rows,
    *lead, k, *rest, C)`), where the axes before it are already phases: the taps of this axis are
    padded along its rows into their phases and added, and the phases are concatenated where the
    taps were. Each pass materializes its result, so as a forward this is slower than
    `col2im_by_tap`'s one fused pass; its transpose can be the cheaper one (`transposes_by_axis`).
    """
    nd = spec.ndim
    blocks = _blocks(spec, out_spatial)
    first_tap, first_row = _axes(nd, channels_last)
    for axis, b in reversed(list(enumerate(blocks))):  # the transpose's last pass is the major axis's
        cols = _add_taps_of_axis(cols, axis, first_tap + axis, first_row + axis, spec, b)
    flat = _merge_taps(cols, first_tap, nd)
    if channels_last:
        return _interleave(flat, "N" + "X" * nd + "PC", spec, out_spatial, True)
    return _interleave(flat, "CPN" + "X" * nd, spec, out_spatial)


def _add_taps_of_axis(cols: jax.Array, axis: int, tap_axis: int, row_axis: int, spec: Spec, blocks: int) -> jax.Array:
    """One pass of `col2im_by_axis`: the taps of `axis` (on `tap_axis` of `cols`) padded along its
    rows (`row_axis`) into the `blocks` rows of their phases and added, the phases put where the
    taps were.

    Where nothing can be sharded (`unpartitioned`: one device) it runs on a view of four axes:
    the rows and the axes after them up to the tap axis (or the end) as one, so that padding
    whole rows pads that axis by multiples of what follows them, and the other axes merged on
    either side of the tap axis; the reshapes are bitcasts. XLA:CPU's LLVM compiles the fusions
    of pads, slices and a concatenate that this and its transpose (the backward's im2col) become
    far faster on four axes than on the six of a 2-D layer's columns (BENCHMARKS.md,
    "Compile time: the im2col's rank"). With more devices the axes stay as they are: merged with
    the batch or a spatial axis as their minor part, GSPMD gathered the whole cotangent
    (`tests/test_sharding.py`).
    """
    shape, n, s = cols.shape, cols.shape[row_axis], spec.stride[axis]
    out_shape = list(shape)
    out_shape[tap_axis], out_shape[row_axis] = s, blocks
    unit = 1  # elements of the row axis per row
    if unpartitioned(cols):
        if tap_axis < row_axis:  # channels first, (C, *lead, k, *rest, N, *rows)
            unit = math.prod(shape[row_axis + 1 :])
            view = (math.prod(shape[:tap_axis]), shape[tap_axis], math.prod(shape[tap_axis + 1 : row_axis]), n * unit)
            tap_axis, row_axis = 1, 3
        else:  # channels last, (N, *rows, *lead, k, *rest, C)
            unit = math.prod(shape[row_axis + 1 : tap_axis])
            view = (math.prod(shape[:row_axis]), n * unit, shape[tap_axis], math.prod(shape[tap_axis + 1 :]))
            tap_axis, row_axis = 2, 1
        cols = cols.reshape(view)
    parts = []
    for t, col in enumerate(lax.split(cols, (1,) * cols.shape[tap_axis], axis=tap_axis)):
        placed = _place(t, axis, spec, n, blocks)
        if placed is not None:
            r, (lo, hi, _) = placed
            pads = [(0, 0, 0)] * col.ndim
            pads[row_axis] = (lo * unit, hi * unit, 0)
            parts.append((r, zero_pad(col, pads)))
    phases = _sum_by_phase(parts)
    zeros_shape = list(cols.shape)
    zeros_shape[tap_axis], zeros_shape[row_axis] = 1, blocks * unit
    zeros = jnp.zeros(zeros_shape, cols.dtype)
    return jnp.concatenate([phases.get(r, zeros) for r in range(s)], axis=tap_axis).reshape(out_shape)


def _sum_by_phase(parts) -> dict:
    """The `(phase, array)` pairs added up per phase, in the order given."""
    phases = {}
    for r, part in parts:
        phases[r] = phases[r] + part if r in phases else part
    return phases


def _blocks(spec: Spec, out_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Rows per output phase on each axis: `ceil(out / s)`."""
    return tuple(-(-n // s) for n, s in zip(out_spatial, spec.stride, strict=True))


def _place(t: int, axis: int, spec: Spec, n: int, blocks: int):
    """The output phase `r` of tap `t` on `axis` and the `(low, high, 0)` pad of its `n` rows into the
    phase's `blocks` rows (negative where `padding` crops them); None if the crop removes them all."""
    q, r = divmod(spec.dilation[axis] * t - spec.padding[axis][0], spec.stride[axis])
    if q >= blocks or q + n <= 0:
        return None
    return r, (q, blocks - q - n, 0)


def _interleave(
    phases: jax.Array, layout: str, spec: Spec, out_spatial: tuple[int, ...], channels_last: bool = False
) -> jax.Array:
    """Row `q * s + r` of the output is row `q` of phase `r`, into `(N, C, *spatial)` (or channels-last);
    then the rows past the output (when `s` does not divide it) are cut. `layout` names the axes of
    `phases` as `interleave`'s does (`P`: the `prod(stride)` phases, row-major)."""
    full = interleave(phases, layout, spec.stride, channels_last=channels_last)
    sizes = full.shape[1:-1] if channels_last else full.shape[2:]
    crops = [(0, want - size) for size, want in zip(sizes, out_spatial, strict=True)]
    return pad_spatial(full, crops, channels_last=channels_last)
