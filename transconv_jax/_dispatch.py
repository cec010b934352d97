"""`conv_transpose`: check the arguments once, pick a form (`method=`), run it under `jax.jit`."""

from __future__ import annotations

import functools

import jax
from jax.typing import ArrayLike

from ._conv import _as_array
from ._matmul import conv_transpose_matmul_form
from ._scatter import conv_transpose_scatter_form
from ._spec import Layout, Spec, check_method, compute_dtypes, conv_transpose_spec, from_canonical, to_canonical
from ._subpixel import conv_transpose_subpixel_form, phases_fuse
from ._vjp import conv_transpose_vjp_form

FORMS = {
    "vjp": conv_transpose_vjp_form,
    "matmul": conv_transpose_matmul_form,
    "scatter": conv_transpose_scatter_form,
    "subpixel": conv_transpose_subpixel_form,
}


def conv_transpose(
    y: ArrayLike,
    w: ArrayLike,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups: int = 1,
    *,
    output_shape=None,
    method: str = "auto",
    dimension_numbers=None,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """Transposed convolution with PyTorch's numbers (`torch.nn.functional.conv_transpose{1,2,3}d`).

    It is the adjoint of `conv(., w, stride, padding, dilation, groups)`: for every `x` and `y`,
    `<conv(x, w), y> == <x, conv_transpose(y, w)>`. Each input element, times the kernel, is
    added into the output at `stride` spacing; `padding` then crops the output.

    Note that the conventions are PyTorch's, not those of `jax.lax.conv_transpose` or Flax's
    `ConvTranspose`: integer padding crops the output, the kernel is used as stored (never
    flipped by the caller), and `w` is the same array as the weight of the conv it transposes.

    Args:
        y: input, `(N, C_in, *spatial)` with 1 to 3 spatial axes (or as `dimension_numbers` says).
        w: kernel, `(C_in, C_out // groups, *kernel)`, PyTorch's ConvTranspose weight layout.
        stride: int or one int per spatial axis.
        padding: int or one int per axis: PyTorch's meaning (crop that many from both ends of
            the output); a tuple of `(low, high)` pairs; or 'SAME' / 'VALID', meaning what
            `jax.lax.conv_transpose(..., transpose_kernel=True)` gives.
        output_padding: int or one int per axis, added to the end of the output; smaller than
            the stride or the dilation of that axis.
        dilation: int or one int per axis.
        groups: number of channel groups.
        output_shape: the wanted spatial output size; picks `output_padding` for you.
        method: 'auto' (default), 'vjp', 'matmul', 'scatter' or 'subpixel'. All give the same
            numbers to float tolerance; they differ in speed and memory.
        dimension_numbers: lax layout strings such as `("NHWC", "HWIO", "NHWC")`, where `I` and
            `O` are this transposed convolution's own input and output channels.
        precision: passed to the underlying `jax.lax` operations.
        preferred_element_type: the accumulation dtype, also the result's. By default float16 and
            bfloat16 inputs accumulate in float32 and the result has the input dtype.

    Returns:
        `(N, C_out, *out_spatial)` in the output layout, where per axis
        `out = (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.

    Example:
        >>> import jax.numpy as jnp
        >>> y = jnp.array([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> conv_transpose(y, y)[0, 0]
        Array([[ 0.,  0.,  1.],
               [ 0.,  4.,  6.],
               [ 4., 12.,  9.]], dtype=float32)
    """
    y, w = _as_array(y), _as_array(w)
    method = check_method(method)
    spec, layout = conv_transpose_spec(
        y, w, stride, padding, output_padding, dilation, groups, output_shape, dimension_numbers, precision
    )
    if method == "auto":
        method = auto_method(spec, _shape(y, layout.lhs), _shape(w, layout.rhs), jax.default_backend())
    return _apply(y, w, spec, layout, method, compute_dtypes(y.dtype, preferred_element_type))


def auto_method(spec: Spec, y_shape: tuple[int, ...], w_shape: tuple[int, ...], backend: str) -> str:
    """The form `method='auto'` runs, from static facts only (canonical shapes, backend).

    Every form gives the same numbers to float tolerance; this only picks the fastest. The CPU
    policy comes from `python -m transconv_jax bench` (BENCHMARKS.md, "Decoder layers"):

    1. grouped (`groups > 1`): 'subpixel' (one grouped stride-1 conv; the others are 3-12x slower);
    2. stride 1 on every axis: 'scatter' (a GEMM and shifted adds; XLA:CPU's convolutions on two
       threads reach about half the GEMM rate, so the conv-based forms' forward is up to 2x slower
       there; fwd+bwd is within noise of them);
    3. no kernel overlap (`kernel <= stride`, no dilation, on every axis, e.g. U-Net and V-Net
       k2 s2): 'scatter', which is then one GEMM and an interleave, with nothing to add up;
    4. the phases fuse (every kernel size a multiple of its stride; DCGAN, FCN-8s, HiFi-GAN):
       'subpixel', one stride-1 conv and its custom kernel gradient;
    5. otherwise (e.g. k3 s2 U-Nets): 'scatter', 1.4-2x faster there than one conv per phase.

    GPU and TPU are unmeasured: they get 'vjp', the flipped-kernel lowering that `jax.vjp` of a
    conv emits, which reaches cuDNN's backward-data kernel.

    Args:
        spec: the canonical `Spec`.
        y_shape: canonical input shape `(N, C_in, *spatial)`.
        w_shape: canonical kernel shape `(C_in, C_out // groups, *kernel)`.
        backend: `jax.default_backend()`, e.g. 'cpu' or 'gpu'.

    Returns:
        One of the keys of `FORMS`.

    Example:
        >>> from transconv_jax._spec import Spec
        >>> auto_method(Spec((2, 2), ((1, 1), (1, 1)), (1, 1), 1), (8, 256, 16, 16), (256, 128, 4, 4), "cpu")
        'subpixel'
    """
    if backend != "cpu":
        return "vjp"
    kernel = w_shape[2:]
    if spec.groups > 1:
        return "subpixel"
    if max(spec.stride) == 1 or all(k <= s and d == 1 for k, s, d in zip(kernel, spec.stride, spec.dilation, strict=True)):
        return "scatter"
    return "subpixel" if phases_fuse(y_shape[2:], kernel, spec) else "scatter"


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _apply(y: jax.Array, w: jax.Array, spec: Spec, layout: Layout, method: str, dtypes) -> jax.Array:
    compute, result = dtypes
    y, w = to_canonical(y, layout.lhs).astype(compute), to_canonical(w, layout.rhs).astype(compute)
    return from_canonical(FORMS[method](y, w, spec).astype(result), layout.out)


def _shape(a, perm) -> tuple[int, ...]:
    return tuple(int(a.shape[p]) for p in perm)


def conv_transpose_vjp(y: ArrayLike, w: ArrayLike, *args, **kwargs) -> jax.Array:
    """`conv_transpose(..., method="vjp")`: the linear transpose of `conv`, the defining form."""
    return conv_transpose(y, w, *args, method="vjp", **kwargs)


def conv_transpose_matmul(y: ArrayLike, w: ArrayLike, *args, **kwargs) -> jax.Array:
    """`conv_transpose(..., method="matmul")`: `W.T @ y` with the conv's explicit matrix `W`."""
    return conv_transpose(y, w, *args, method="matmul", **kwargs)


def conv_transpose_scatter(y: ArrayLike, w: ArrayLike, *args, **kwargs) -> jax.Array:
    """`conv_transpose(..., method="scatter")`: a GEMM, then each kernel tap added into the output."""
    return conv_transpose(y, w, *args, method="scatter", **kwargs)


def conv_transpose_subpixel(y: ArrayLike, w: ArrayLike, *args, **kwargs) -> jax.Array:
    """`conv_transpose(..., method="subpixel")`: stride-1 convs of the kernel's phases, interleaved."""
    return conv_transpose(y, w, *args, method="subpixel", **kwargs)
