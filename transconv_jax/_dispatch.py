from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from ._conv import add_bias, as_array, bilinear_tangent
from ._matmul import conv_transpose_matmul_form
from ._scatter import conv_transpose_scatter_form, one_element, small_columns
from ._shuffle import explicit_spec
from ._spec import (
    DType,
    IntOrSequence,
    Layout,
    Method,
    Padding,
    Precision,
    Spec,
    add_batch_axis,
    check_method,
    conv_transpose_spec,
    drop_batch_axis,
    from_canonical,
    overlaps,
    result_dtype,
    to_canonical,
)
from ._subpixel import conv_transpose_subpixel_form, phases_fuse, stride_1_windows_fit
from ._vjp import conv_transpose_vjp_form, xla_cpu_hazard

FORMS = {
    "vjp": conv_transpose_vjp_form,
    "matmul": conv_transpose_matmul_form,
    "scatter": conv_transpose_scatter_form,
    "subpixel": conv_transpose_subpixel_form,
}


def conv_transpose(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    output_padding: IntOrSequence = 0,
    groups: int = 1,
    dilation: IntOrSequence = 1,
    *,
    output_shape: IntOrSequence | None = None,
    method: Method = "auto",
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
    matrix_budget: int | None = None,
) -> jax.Array:
    """Transposed convolution with PyTorch's numbers and positional arguments (`torch.nn.functional.conv_transpose{1,2,3}d`).

    It is the adjoint of `conv(., weight, None, stride, padding, dilation, groups)`: for every `x`
    and `y`, `<conv(x, w), y> == <x, conv_transpose(y, w)>`. Each input element, times the kernel,
    is added into the output at `stride` spacing; `padding` then crops the output.

    Note that the conventions are PyTorch's, not those of `jax.lax.conv_transpose` or Flax's
    `ConvTranspose`: integer padding crops the output, the kernel is used as stored (never
    flipped by the caller), and `weight` is the same array as the weight of the conv it transposes.
    The positional order is PyTorch's too: `groups` before `dilation`.

    Args:
        input: `(N, C_in, *spatial)` with 1 to 3 spatial axes, or `(C_in, *spatial)` without a batch
            axis (as in PyTorch), or as `dimension_numbers` say.
        weight: `(C_in, C_out // groups, *kernel)`, PyTorch's ConvTranspose weight layout.
        bias: `(C_out,)` or None; added in the accumulation dtype, before the result is rounded.
        stride: int or one int per spatial axis.
        padding: int or one int per axis: PyTorch's meaning (crop that many from both ends of
            the output); a tuple of `(low, high)` pairs; or 'SAME' / 'VALID', meaning what
            `jax.lax.conv_transpose(..., transpose_kernel=True)` gives.
        output_padding: int or one int per axis, added to the end of the output; smaller than
            the stride or the dilation of that axis.
        groups: number of channel groups.
        dilation: int or one int per axis.
        output_shape: the wanted spatial output size; picks `output_padding` for you.
        method: 'auto' (default), 'vjp', 'matmul', 'scatter' or 'subpixel'. All give the same
            numbers to float tolerance; they differ in speed and memory.
        dimension_numbers: lax layout strings such as `("NHWC", "HWIO", "NHWC")`, where `I` and
            `O` are this transposed convolution's own input and output channels.
        precision: passed to the underlying `jax.lax` operations.
        preferred_element_type: the accumulation dtype, also the result's. By default float16 and
            bfloat16 operands stay in their dtype, accumulate in float32, and the result has their dtype.
        matrix_budget: bytes the explicit matrix of `method="matmul"` may take (static); None for 256 MiB.

    Returns:
        `(N, C_out, *out_spatial)` in the output layout (no batch axis if `input` has none), where per axis
        `out = (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.

    Example:
        >>> import jax.numpy as jnp
        >>> y = jnp.array([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> conv_transpose(y, y)[0, 0]
        Array([[ 0.,  0.,  1.],
               [ 0.,  4.,  6.],
               [ 4., 12.,  9.]], dtype=float32)
    """
    input, weight, bias = as_array(input), as_array(weight), None if bias is None else as_array(bias)
    method = check_method(method)
    spec, layout = conv_transpose_spec(
        input, weight, bias, stride, padding, output_padding, groups, dilation, output_shape, dimension_numbers,
        precision, preferred_element_type, matrix_budget,
    )  # fmt: skip
    return _apply(input, weight, bias, spec, layout, method)


def auto_method(
    spec: Spec,
    y_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    platform: str = "cpu",
    derivatives: Literal["input", "kernel"] | None = None,
    dtype=None,
) -> Literal["vjp", "matmul", "scatter", "subpixel"]:
    """The form `method='auto'` runs on `platform`, from static facts only (canonical shapes, dtype, platform).

    This is the one place where a choice depends on the backend; `auto_form` applies it per lowering
    platform, to the forward and, with `derivatives="input"` and `"kernel"`, to the two gradients,
    which may each come from another form.

    Every form gives the same numbers to float tolerance; this only picks the fastest. The CPU
    policy comes from `benchmarks/bench.py` (forward and fwd+bwd) and `benchmarks/derivatives.py`
    (each gradient of each form apart); BENCHMARKS.md has both runs:

    1. grouped (`groups > 1`): 'subpixel' (im2col GEMMs batched over the groups, forward and both
       gradients; the others are several times slower);
    2. one input element per example, no dilation (`one_element`: a generator's first layer,
       1x1 -> 4x4): 'scatter', which is then one GEMM and a transpose, forward and both gradients;
    3. stride 1 on every axis: both gradients 'vjp', the convolutions `jax.lax` runs, faster
       than subpixel's im2col GEMMs on most stride-1 layers beyond the suite's
       (`benchmarks/ab.py --stride-1`, BENCHMARKS.md); but where subpixel's shifted windows
       exceed im2col's budget (its per-tap scan, `_subpixel.stride_1_windows_fit`) and there are
       at least 64 input channels (the suite's stride-1 layer; not with dilation), the input
       gradient 'subpixel' and the kernel gradient 'scatter': one GEMM of the cotangent's columns,
       built axis by axis, against the input, both with their rows minor, where the scan's
       products contract their leading axis, a slower GEMM for XLA:CPU
       (`benchmarks/gemm_layouts.py`; channels-last arrays: their columns are channels-last too,
       and subpixel's scan stays; BENCHMARKS.md, "Stride-1 kernel gradients"). The forward's
       columns are as large, so the memory grows by at most that much. The forward:
       'scatter' (a GEMM and shifted adds) from 64 input channels on, 'vjp' below, where the
       GEMM's inner dimension is short and its col2im as large as ever; with dilation on
       channels-last arrays (`Spec.channels_last`, the Flax layers) 'vjp' too, a dilated
       convolution XLA:CPU runs on them as they lie, where the scatter form's GEMM needs its
       input transposed (BENCHMARKS.md, "Channels-last");
       in 3-D no convolution at all, XLA:CPU's 3-D ones being several times slower than the GEMM
       forms (BENCHMARKS.md, "3-D stride-1 layers"). Where subpixel's shifted windows fit im2col
       (`_subpixel.stride_1_windows_fit`: no scan over the taps, whose dynamic slices made GSPMD
       all-gather a spatially sharded input), its forward (GEMMs on CPU) but on small layers
       (`small_columns`, as in rule 5), and its gradients below 64 input channels; 'scatter'
       otherwise. Past im2col the forward is 'scatter' for at most 27 taps and no more output
       than input channels, else the vjp form's convolution, which was faster there (a wider
       output or 125 taps: scatter's col2im grows with both);
    4. no kernel overlap (`kernel <= stride`, no dilation, on every axis, e.g. U-Net and V-Net
       k2 s2): 'scatter', which is then one GEMM and an interleave, with nothing to add up;
    5. the phases fuse (every kernel size a multiple of its stride; DCGAN, FCN-8s, HiFi-GAN):
       'subpixel', one stride-1 conv, for the forward of large layers. The input gradient is the
       'vjp' form's (one strided convolution of the cotangent) when both channel counts are at
       least 64, where XLA:CPU's convolution beats im2col (DCGAN, HiFi-GAN). Otherwise, and for
       the kernel gradient, it depends on size, as the forward does: on small layers
       (`_scatter.small_columns`: the scatter form's columns have at most 2**21 elements; a DCGAN
       generator's layers up to 16x16 -> 32x32) 'scatter', whose GEMM was faster than XLA:CPU's
       convolution there (`benchmarks/ab.py --generator`, BENCHMARKS.md) and whose gradients
       share the cotangent's columns; on larger ones subpixel's im2col (FCN-8s, HiFi-GAN, DCGAN
       32x32), but the kernel gradient of 2-D k4 s2 layers scatter's up to twice that size
       (`scatter_kernel_gradient`: DCGAN 16x16);
    6. otherwise (e.g. k3 s2 U-Nets): 'scatter', faster there than one conv per phase. (Its
       gradients apart, the vjp form's input gradient was faster than scatter's, but not the
       fwd+bwd that mixed them: scatter's two gradients share the cotangent's columns.)

    On channels-last arrays (`Spec.channels_last`, the Flax layers) the scatter form itself
    computes channels-last where that measured faster (`_scatter`'s module docstring).

    Rule 5 is where gradients mix forms: taking the input gradient from the form whose input
    gradient alone was fastest sped up fwd+bwd on the DCGAN and HiFi-GAN layers, but slowed down
    the k3 s2 U-Nets and the dilated stride-1 layer, where one form shares work between its two
    gradients (`benchmarks/derivatives.py`; BENCHMARKS.md).

    CUDA and ROCm: `_gpu_method`, from `benchmarks/gpu.sh` on one H200. TPU is unmeasured: 'vjp',
    the lowering `jax.vjp` of a conv emits, for the forward, and the CPU policy's gradients.

    Args:
        spec: the canonical `Spec`.
        y_shape: canonical input shape `(N, C_in, *spatial)`.
        w_shape: canonical kernel shape `(C_in, C_out // groups, *kernel)`.
        platform: a lowering platform: 'cpu', 'cuda', 'rocm' or 'tpu'.
        derivatives: None for the forward; "input" or "kernel" for the form whose gradient `auto`
            takes.
        dtype: the operands' dtype (the GPU policy differs in half precision); None: float32.

    Returns:
        One of the keys of `FORMS`.

    Example:
        >>> from transconv_jax._spec import Spec
        >>> spec = Spec((2, 2), ((1, 1), (1, 1)), (1, 1), 1)
        >>> auto_method(spec, (8, 256, 16, 16), (256, 128, 4, 4), platform="cpu")
        'subpixel'
        >>> auto_method(spec, (8, 256, 16, 16), (256, 128, 4, 4), platform="cpu", derivatives="input")
        'vjp'
    """
    if platform in ("cuda", "rocm"):
        return _gpu_method(spec, y_shape, w_shape, derivatives, dtype)
    if platform != "cpu" and not derivatives:
        return "vjp"
    kernel = w_shape[2:]
    if spec.groups > 1:
        return "subpixel"
    if one_element(y_shape[2:], spec):
        return "scatter"
    if max(spec.stride) == 1:
        dilated = max(spec.dilation) > 1
        itemsize = 4 if dtype is None else np.dtype(dtype).itemsize
        if len(kernel) == 3:  # no XLA:CPU 3-D convolution: GEMM forms, forward and both gradients
            fit = stride_1_windows_fit(y_shape, w_shape, spec, itemsize)  # subpixel's im2col, no scan
            if derivatives:
                return "subpixel" if fit and y_shape[1] < 64 else "scatter"
            narrowing = w_shape[1] * spec.groups <= y_shape[1]  # no more output channels than input ones
            if small_columns(y_shape, w_shape, spec.groups) or (not fit and math.prod(kernel) <= 27 and narrowing):
                return "scatter"
            return "subpixel" if fit else "vjp"
        if derivatives:
            scan = not stride_1_windows_fit(y_shape, w_shape, spec, itemsize)  # subpixel's per-tap scan
            if scan and not dilated and y_shape[1] >= 64:  # the kernel gradient from the cotangent's columns
                return "scatter" if derivatives == "kernel" and not spec.channels_last else "subpixel"
            return "vjp"
        return "vjp" if y_shape[1] < 64 or (dilated and spec.channels_last) else "scatter"
    if not overlaps(kernel, spec):
        return "scatter"
    if not phases_fuse(y_shape[2:], kernel, spec):
        return "scatter"
    if derivatives == "input" and not xla_cpu_hazard(spec) and min(y_shape[1], w_shape[1]) >= 64:
        return "vjp"
    if derivatives == "kernel" and scatter_kernel_gradient(spec, y_shape, w_shape, dtype):
        return "scatter"
    return "scatter" if small_columns(y_shape, w_shape, spec.groups) else "subpixel"


_KERNEL_GRADIENT_COLUMNS = 2**22  # elements: 16 MiB in float32 (`scatter_kernel_gradient`)


def scatter_kernel_gradient(spec: Spec, y_shape, w_shape, dtype=None) -> bool:
    """Whether a 2-D k4 s2 layer (DCGAN's) takes its kernel gradient from the scatter form, not
    subpixel's: in float32 (`dtype` None or 4 bytes; half precision is unmeasured) on
    channels-first arrays whose columns have at most `_KERNEL_GRADIENT_COLUMNS` elements
    (`_scatter.small_columns` with that limit; the rule by size below it holds anyway).

    There the scatter form's one GEMM of the cotangent's columns (built axis by axis) against the
    input, with the rows minor in both operands, beat subpixel's im2col GEMM, whose windows
    XLA:CPU lays out with the contracted rows major (a slower GEMM: `benchmarks/gemm_layouts.py`),
    on three of the four layers of 2**22 columns measured (DCGAN 16x16 among them; a tie or a
    loss on the fourth), and lost on those of 2**23 (DCGAN 32x32 among them): `benchmarks/ab.py
    --k4s2`, BENCHMARKS.md, "k4 s2 kernel gradients". On channels-last arrays the columns are
    channels-last too, and it was not faster. Other kernels and strides are unmeasured and keep
    the rule by size.

    Example:
        >>> spec = Spec((2, 2), ((1, 1), (1, 1)), (1, 1), 1)
        >>> scatter_kernel_gradient(spec, (8, 256, 16, 16), (256, 128, 4, 4))  # 8 * 16 * 16 * 16 * 128 = 2**22
        True
    """
    k4s2 = w_shape[2:] == (4, 4) and spec.stride == (2, 2) and spec.dilation == (1, 1)
    single = dtype is None or np.dtype(dtype).itemsize == 4
    columns = small_columns(y_shape, w_shape, spec.groups, _KERNEL_GRADIENT_COLUMNS)
    return k4s2 and single and not spec.channels_last and columns


def _gpu_method(spec: Spec, y_shape, w_shape, derivatives, dtype) -> Literal["vjp", "scatter", "subpixel"]:
    """`auto_method` on CUDA and ROCm, from `benchmarks/gpu.sh` on one H200 (BENCHMARKS.md, GPU).

    Forward: 'vjp', the convolution `jax.lax.conv_transpose` runs (cuDNN's backward-data kernel;
    in half precision too, `_conv._conv_product`), except where the phases fuse, the kernel
    overlaps and a channel count is below 64 (FCN-8s, 21 channels): 'subpixel', whose forward
    and fwd+bwd (its own gradients, rule 5) were the fastest there in both dtypes. Subpixel's
    forward was also faster on the 3-D V-Net k2 s2 layer (not taken: one layer, a small margin
    in bfloat16) and slower on the eight others, HiFi-GAN's k16 s8 with 512 channels included.

    Gradients: those XLA derives for that convolution were the slow part on most layers (the
    vjp form's fwd+bwd was many times PyTorch's on the strided 3-D layers), so most come from the
    GEMM forms:

    1. grouped: 'subpixel', as on CPU;
    2. stride 1, and layers small enough for the CPU policy's size rule (`small_columns`; not
       reached at a GPU's batch): the CPU policy's (in 3-D the GEMM forms', unmeasured on a
       GPU). On the dilated layer that is 'vjp', whose gradients ran several times slower than
       scatter's in float32: taking scatter's there would make the gradients differ by platform,
       which costs XLA:CPU compile time (tracing both: the dilated layer's fwd+bwd compile passed
       1.5x jax.lax's; BENCHMARKS.md), so the GPU keeps the CPU's until a cheaper way is found.
       Likewise the float32 kernel gradient of 2-D k4 s2 layers up to 2**22 columns
       (`scatter_kernel_gradient`: scatter's; with the platforms' gradients differing, DCGAN
       16x16's fwd+bwd compiled much longer: BENCHMARKS.md, "k4 s2 kernel gradients");
    3. no kernel overlap (U-Net k2 s2, V-Net) or phases that do not fuse (k3 s2 U-Nets, 2-D
       and 3-D): 'scatter', whose two gradients share the cotangent's columns;
    4. the phases fuse, stride 2 (DCGAN k4 s2), both channel counts at least 64 (as measured):
       in half precision 'vjp' (the vjp form, i.e. jax.lax's program, was the fastest bfloat16
       fwd+bwd on both DCGAN layers); in float32 the input gradient from 'vjp' and the kernel
       gradient from 'subpixel' (the fastest measured); below 64 channels as in 5;
    5. the phases fuse, larger strides (FCN-8s and HiFi-GAN, k16 s8): the kernel gradient from
       'subpixel', the input gradient from 'vjp' when both channel counts are at least 64
       (HiFi-GAN), else from 'subpixel' (FCN-8s).

    Measured on the CPU suite's layers at a GPU's batch (x8); plain stride-1 layers and DCGAN's
    generator were not reached on the GPU, and where the bfloat16 forward changed after the run
    (now jax.lax's), its fwd+bwd with the run's gradients is unmeasured (BENCHMARKS.md says where).
    """
    kernel = w_shape[2:]
    fused = spec.groups == 1 and max(spec.stride) > 1 and overlaps(kernel, spec)
    fused = fused and phases_fuse(y_shape[2:], kernel, spec)  # the phases fuse and the kernel overlaps
    wide = min(y_shape[1], w_shape[1]) >= 64
    if not derivatives:
        return "subpixel" if fused and not wide else "vjp"
    if spec.groups > 1:
        return "subpixel"
    if max(spec.stride) == 1 or small_columns(y_shape, w_shape, spec.groups):
        return auto_method(spec, y_shape, w_shape, platform="cpu", derivatives=derivatives)
    if not fused:  # no kernel overlap, or phases that do not fuse
        return "scatter"
    if wide and max(spec.stride) == 2 and dtype is not None and np.dtype(dtype).itemsize == 2:
        return "vjp"
    if derivatives == "kernel" and scatter_kernel_gradient(spec, y_shape, w_shape, dtype):
        return "scatter"
    if derivatives == "input" and wide:
        return "vjp"
    return "subpixel"


def auto_forms(
    spec: Spec, y_shape: tuple[int, ...], w_shape: tuple[int, ...], platform: str, dtype=None, explicit: bool = False
) -> tuple[Method, Method, Method]:
    """The forms `method="auto"` runs when lowered for `platform`: its forward's, and those whose
    input and kernel gradients it takes (`auto_form`'s derivatives).

    `explicit`: the input is sharded over Explicit mesh axes. JAX's transposes of its own
    convolution then ask for an `out_sharding` that nothing here can give, so a 'vjp' gradient
    becomes 'subpixel''s (whose GEMMs keep batch sharding; `tests/test_sharding.py`)."""
    kw = dict(platform=platform, dtype=dtype)
    forms = tuple(auto_method(spec, y_shape, w_shape, derivatives=d, **kw) for d in (None, "input", "kernel"))
    if explicit:
        forms = (forms[0], *("subpixel" if f == "vjp" else f for f in forms[1:]))
    return forms


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _apply(y, w, bias, spec: Spec, layout: Layout, method: Method) -> jax.Array:
    y, w = to_canonical(add_batch_axis(y, layout), layout.lhs), to_canonical(w, layout.rhs)
    out = auto_form(y, w, spec) if method == "auto" else _named_form(method, spec)(y, w)
    out = from_canonical(add_bias(out, bias).astype(result_dtype(y.dtype, spec)), layout.out)
    return drop_batch_axis(out, layout)


PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
"""The lowering platforms `auto` chooses for (`jax.lax.platform_dependent`)."""


def auto_form(y: jax.Array, w: jax.Array, spec: Spec) -> jax.Array:
    """`method="auto"`: the forms `auto_forms` picks for the platform the function is lowered for.

    All branches are traced; `jax.lax.platform_dependent` keeps the one of the lowering platform
    (each platform's, in a multi-platform `jax.export`), so the choice follows where the code runs,
    not the default backend at trace time.

    Derivatives: the tangent in `y` is that of the input-gradient form and the tangent in `w` that
    of the kernel-gradient form (`_with_gradients`), so reverse mode runs each gradient as its
    fastest form does, and a gradient nobody asks for is not computed (symbolic zeros). Where the
    platforms agree on those forms (every suite layer in float32), only the forward is chosen at
    lowering, inside one `_with_gradients`. Where they differ (large k4 s2 layers in half
    precision), each platform gets its own `_with_gradients` under `jax.checkpoint` with nothing
    saved: otherwise, under any enclosing jit (`_apply` is one), the choice reached the backward
    as a residual, and XLA:CPU compiled the transposed branch with slow convolution layouts (an
    order of magnitude slower on the suite's dilated layer while its gradients differed, in a
    one-off check). The recomputation costs nothing: the derivatives of a bilinear map need only
    `y` and `w`. (A `platform_dependent` inside the tangent was as slow.) Every platform's
    branch is traced, so gradients that differ also cost trace and compile time.
    """
    explicit = explicit_spec(y) is not None
    forms = {p: auto_forms(spec, y.shape, w.shape, p, y.dtype, explicit) for p in PLATFORMS}
    gradients = {f[1:] for f in forms.values()}
    if len(gradients) == 1:
        forwards = tuple((p, f[0]) for p, f in forms.items())
        return _with_gradients(forwards, gradients.pop(), spec, False, y, w)

    def one_platform(f):
        return functools.partial(_with_gradients, tuple((p, f[0]) for p in PLATFORMS), f[1:], spec, False)

    per_platform = functools.partial(_per_platform, forms, one_platform)
    return jax.checkpoint(per_platform, policy=jax.checkpoint_policies.nothing_saveable)(y, w)


def _per_platform(choices: dict, build, y: jax.Array, w: jax.Array) -> jax.Array:
    """`build(choices[platform])(y, w)` for the lowering platform: one branch per distinct choice."""
    branches = {choice: build(choice) for choice in dict.fromkeys(choices.values())}
    if len(branches) == 1:
        return next(iter(branches.values()))(y, w)
    default = choices["cuda"]
    per_platform = {p: branches[c] for p, c in choices.items() if c != default}
    return lax.platform_dependent(y, w, default=branches[default], **per_platform)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _with_gradients(forwards: tuple, gradients: tuple[str, str], spec: Spec, differentiated: bool, y, w):
    """The forward of form `forwards[platform]` (pairs; chosen at lowering), differentiated as the
    input gradient of form `gradients[0]` and the kernel gradient of form `gradients[1]`; its value
    as the form computes it under a gradient where `differentiated` (`_named_form`)."""
    return _per_platform(dict(forwards), lambda name: _named_form(name, spec, differentiated), y, w)


@functools.partial(_with_gradients.defjvp, symbolic_zeros=True)
def _with_gradients_jvp(forwards, gradients, spec, differentiated, primals, tangents):
    y, w = primals
    ty, tw = tangents
    out = _with_gradients(forwards, gradients, spec, True, y, w)
    d_in, d_kernel = (_named_form(name, spec) for name in gradients)
    zero = jax.custom_derivatives.SymbolicZero
    if (
        gradients[0] == gradients[1] and not isinstance(ty, zero) and not isinstance(tw, zero)
    ):  # one form: trace it once
        return out, jax.jvp(d_in, primals, tangents)[1]
    return out, bilinear_tangent(
        out,
        (lambda ty: jax.jvp(lambda y: d_in(y, w), (y,), (ty,))[1], ty),
        (lambda tw: jax.jvp(lambda w: d_kernel(y, w), (w,), (tw,))[1], tw),
    )


def _named_form(name: str, spec: Spec, differentiated: bool = False):
    """Form `name` as `f(y, w)`, under its name in the compiled program's locations. `differentiated`:
    its value as it computes it under a gradient (the scatter form on kernels of many taps adds
    them axis by axis then: `_scatter.adds_by_axis`)."""
    kwargs = {"differentiated": True} if differentiated and name == "scatter" else {}

    def form(y, w):
        with jax.named_scope(f"transconv_jax.{name}"):
            return FORMS[name](y, w, spec, **kwargs)

    return form


def conv_transpose_vjp(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    output_padding: IntOrSequence = 0,
    groups: int = 1,
    dilation: IntOrSequence = 1,
    *,
    output_shape: IntOrSequence | None = None,
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
) -> jax.Array:
    """`conv_transpose(..., method="vjp")`: the lowering of the linear transpose of `conv`, the definition."""
    return conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, output_shape=output_shape,
        method="vjp", dimension_numbers=dimension_numbers, precision=precision,
        preferred_element_type=preferred_element_type,
    )  # fmt: skip


def conv_transpose_matmul(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    output_padding: IntOrSequence = 0,
    groups: int = 1,
    dilation: IntOrSequence = 1,
    *,
    output_shape: IntOrSequence | None = None,
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
    matrix_budget: int | None = None,
) -> jax.Array:
    """`conv_transpose(..., method="matmul")`: `W.T @ y` with the conv's explicit matrix `W`."""
    return conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, output_shape=output_shape,
        method="matmul", dimension_numbers=dimension_numbers, precision=precision,
        preferred_element_type=preferred_element_type, matrix_budget=matrix_budget,
    )  # fmt: skip


def conv_transpose_scatter(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    output_padding: IntOrSequence = 0,
    groups: int = 1,
    dilation: IntOrSequence = 1,
    *,
    output_shape: IntOrSequence | None = None,
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
) -> jax.Array:
    """`conv_transpose(..., method="scatter")`: a GEMM, then each kernel tap added into the output."""
    return conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, output_shape=output_shape,
        method="scatter", dimension_numbers=dimension_numbers, precision=precision,
        preferred_element_type=preferred_element_type,
    )  # fmt: skip


def conv_transpose_subpixel(
    input: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrSequence = 1,
    padding: Padding = 0,
    output_padding: IntOrSequence = 0,
    groups: int = 1,
    dilation: IntOrSequence = 1,
    *,
    output_shape: IntOrSequence | None = None,
    dimension_numbers: Sequence[str] | None = None,
    precision: Precision = None,
    preferred_element_type: DType | None = None,
) -> jax.Array:
    """`conv_transpose(..., method="subpixel")`: stride-1 convs of the kernel's phases, interleaved."""
    return conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, output_shape=output_shape,
        method="subpixel", dimension_numbers=dimension_numbers, precision=precision,
        preferred_element_type=preferred_element_type,
    )  # fmt: skip
