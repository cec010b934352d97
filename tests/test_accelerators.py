"""The accelerator path: half precision kept in every product, and the platform chosen at lowering."""

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracle import Config, assert_close, to_channels_last, torch_conv_transpose

import transconv_jax as tc
from transconv_jax import _dispatch, _vjp
from transconv_jax._dispatch import FORMS
from transconv_jax._spec import dilated_kernel, lax_layout

METHODS = [*FORMS, "auto"]
PRODUCTS = {"conv_general_dilated", "dot_general", "bcoo_dot_general"}
CONFIGS = {
    "DCGAN k4 s2 p1": Config(2, 4, 3, 1, (4, 5), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),
    "strided dilated grouped": Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 2)),
    "stride 1": Config(1, 2, 3, 1, (5,), (3,), (1,), (1,), (0,), (1,)),
    "3-D k3 s2 op1": Config(1, 2, 2, 1, (2, 3, 2), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    # >= 64 channels: auto takes the vjp form's input gradient and, on a layer this small, scatter's kernel gradient
    "DCGAN 64 ch, mixed gradients": Config(1, 64, 64, 1, (3, 3), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),
}
U_NET_K2 = Config(2, 4, 3, 1, (3, 4), (2, 2), (2, 2), (0, 0), (0, 0), (1, 1))
# >= 64 input channels: the scatter form's forward on CPU
DILATED_STRIDE_1 = Config(1, 64, 3, 1, (6, 6), (3, 3), (1, 1), (2, 2), (0, 0), (2, 2))
# ... and subpixel's kernel gradient on a large one (the scatter form's columns: 48 * 96 * 16 taps * 64 > 2**22)
LARGE_MIX = Config(1, 64, 64, 1, (48, 96), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1))


def _sub_jaxprs(params):
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(v, "jaxpr") and hasattr(v, "consts"):
                yield v.jaxpr
            elif hasattr(v, "eqns"):
                yield v


def products(jaxpr):
    """(primitive, operand dtypes, params) of every convolution and matrix product, nested jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in PRODUCTS:
            yield eqn.primitive.name, [str(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype")], eqn.params
        for sub in _sub_jaxprs(eqn.params):
            yield from products(sub)


def _fwd_bwd(f):
    """`(y, w) -> (f(y, w), vjp(f)(f(y, w)))`: the value and both gradients, the value as cotangent."""

    def fwd_bwd(y, w):
        out, vjp = jax.vjp(f, y, w)
        return out, vjp(out)

    return fwd_bwd


def _forward_and_backward(cfg, method, dtype, channels_last=False, **options):
    y, w = (jnp.asarray(a, dtype) for a in cfg.arrays())
    if channels_last:  # as the Flax layers hold them
        y, w = to_channels_last(y, w)
        options["dimension_numbers"] = lax_layout(cfg.ndim, channels_last=True)
    bias = jnp.ones(cfg.c_out_per_group * cfg.groups, dtype)
    f = lambda y, w: tc.conv_transpose(y, w, bias, **cfg.kwargs, method=method, **options)  # noqa: E731

    return list(products(jax.make_jaxpr(_fwd_bwd(f))(y, w).jaxpr))


HALF_CASES = [
    *(pytest.param(cfg, method, id=f"{method}-{name}") for name, cfg in CONFIGS.items() for method in METHODS),
    pytest.param(LARGE_MIX, "auto", id="auto-DCGAN 64 ch, large, mixed gradients"),
]


@pytest.mark.parametrize("cfg, method", HALF_CASES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_operands_in_every_product_forward_and_backward(cfg, method, dtype):
    found = _forward_and_backward(cfg, method, dtype)
    assert len(found) >= 3, found  # the forward and both gradients
    wide = [(prim, dtypes) for prim, dtypes, _ in found if set(dtypes) != {np.dtype(dtype).name}]
    assert not wide, f"products with operands wider than {np.dtype(dtype).name}: {wide}"
    # The forward product accumulates in float32: at least one product asks for it.
    assert any(p.get("preferred_element_type") == np.dtype(np.float32) for _, _, p in found)


@pytest.mark.parametrize(
    "cfg, method",
    [(U_NET_K2, "scatter"), (U_NET_K2, "auto"), (CONFIGS["DCGAN k4 s2 p1"], "scatter"), (CONFIGS["stride 1"], "auto")],
    ids=str,
)
def test_half_precision_operands_on_channels_last_paths(cfg, method):
    """The scatter form's channels-last paths in a Flax layer's layout: `blocks_channels_last` (U-Net k2
    s2) and channels-last columns with their col2im (overlapping taps, 1-D and 2-D)."""
    found = _forward_and_backward(cfg, method, jnp.bfloat16, channels_last=True)
    assert len(found) >= 3, found
    assert all(set(dtypes) == {"bfloat16"} for _, dtypes, _ in found), found
    assert any(p.get("preferred_element_type") == np.dtype(np.float32) for _, _, p in found)


@pytest.mark.parametrize("method", METHODS)
def test_precision_reaches_every_product(method):
    found = _forward_and_backward(CONFIGS["DCGAN k4 s2 p1"], method, jnp.float32, precision=jax.lax.Precision.HIGHEST)
    precisions = {str(p.get("precision")) for prim, _, p in found if prim != "bcoo_dot_general"}
    assert precisions and all("HIGHEST" in p for p in precisions), precisions


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_gradients_are_within_bf16_rounding_of_torch(method):
    """Values and both gradients against float32 PyTorch on the bf16-rounded inputs and cotangent."""
    cfg = CONFIGS["strided dilated grouped"]
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in cfg.arrays(3))
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=method)  # noqa: E731
    out, vjp = jax.vjp(f, y, w)
    cot = jnp.asarray(np.random.default_rng(4).standard_normal(out.shape), jnp.bfloat16)
    gy, gw = vjp(cot)
    assert out.dtype == gy.dtype == gw.dtype == jnp.bfloat16
    as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    ref, ref_gy, ref_gw = torch_conv_transpose(as32(y), as32(w), cfg, as32(cot))
    # One rounding of the float32 sum to bf16 is 2^-8 relative; allow the few roundings of the tap sums.
    for a, b in ((out, ref), (gy, ref_gy), (gw, ref_gw)):
        assert_close(as32(a), b, rtol=2**-6)


def test_bf16_matmul_kernel_gradient_sums_its_taps_in_float32():
    """The matmul form's kernel gradient sums each tap over every position it fills (64 here).

    Summed in bfloat16 it failed this bound (1.8e-2 of the largest gradient off float32 PyTorch
    when this test was first run on that code); summed in float32 and rounded once it passes.
    """
    cfg = Config(2, 8, 4, 1, (8, 8), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1))
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in cfg.arrays(5))
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="matmul")  # noqa: E731
    out, vjp = jax.vjp(f, y, w)
    cot = jnp.asarray(np.random.default_rng(6).standard_normal(out.shape), jnp.bfloat16)
    (gw,) = vjp(cot)[1:]
    as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    ref_gw = torch_conv_transpose(as32(y), as32(w), cfg, as32(cot))[2]
    scale = np.abs(ref_gw).max()
    assert np.abs(as32(gw) - ref_gw).max() <= 2**-7 * scale


def test_bias_is_added_before_the_single_rounding():
    """PyTorch rounds conv + bias once; adding the bias to a bf16 result would round twice."""
    cfg = CONFIGS["DCGAN k4 s2 p1"]
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in cfg.arrays(5))
    bias = jnp.asarray(np.linspace(-3, 3, 3) + 1 / 3, jnp.bfloat16)
    for method in METHODS:
        out = tc.conv_transpose(y, w, bias, **cfg.kwargs, method=method)
        wide = tc.conv_transpose(y, w, bias, **cfg.kwargs, method=method, preferred_element_type=jnp.float32)
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(wide.astype(jnp.bfloat16), np.float32))


# --------------------------------------------------------------------------- platforms


def _export_text(f, args, platforms):
    exported = jax.export.export(jax.jit(f), platforms=platforms)(*args)
    return exported, exported.mlir_module()


def _interior_pads(text):
    """The interior padding of every `stablehlo.pad` in a StableHLO module."""
    return [list(map(int, m.split(","))) for m in re.findall(r"stablehlo\.pad .* interior = \[([^\]]*)\]", text)]


STRIDED_DILATED = CONFIGS["strided dilated grouped"]


@pytest.mark.parametrize("method", ["vjp", "auto"])
def test_export_for_cuda_on_this_cpu_carries_the_gpu_lowering(method):
    cfg = STRIDED_DILATED
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in (cfg.y_shape, cfg.w_shape)]
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=method)  # noqa: E731
    _, cuda = _export_text(f, args, ["cuda"])
    _, cpu = _export_text(f, args, ["cpu"])
    assert "lhs_dilate" in cuda and not any(any(p) for p in _interior_pads(cuda)), "cuda: no zeros inserted by pad"
    assert "lhs_dilate" not in cpu, "cpu: never the lowering that aborts XLA:CPU"
    if method == "vjp":
        assert any(any(p) for p in _interior_pads(cpu)), "cpu: the workaround inserts the zeros with pad"


def test_subpixel_3d_forward_is_gemms_on_cpu_and_the_convolution_elsewhere():
    """In 3-D the subpixel form's phase convolution is `_tap_matmuls`' GEMMs when lowered for CPU,
    whose 3-D convolutions are slow, and stays a convolution for CUDA and TPU."""
    cfg = Config(2, 4, 3, 1, (4, 3, 5), (3, 3, 3), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1))
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in (cfg.y_shape, cfg.w_shape)]
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="subpixel")  # noqa: E731
    assert "stablehlo.convolution" not in _export_text(f, args, ["cpu"])[1]
    for platform in ("cuda", "tpu"):
        assert "stablehlo.convolution" in _export_text(f, args, [platform])[1], platform


def _products(text):
    """Every convolution and dot of a StableHLO module, SSA names and locations left out."""
    lines = [line for line in text.splitlines() if re.search(r"stablehlo\.(convolution|dot_general)", line)]
    return [re.sub(r"loc\(.*\)|%[\w#]+", "", line).strip() for line in lines]


@pytest.mark.parametrize("name", ["DCGAN k4 s2 p1", "3-D k3 s2 op1"])
def test_vjp_form_on_cuda_in_bf16_runs_the_convolutions_of_jax_lax(name):
    """On an H200, the vjp form's bf16 forward asked cuDNN for a float32 result and ran several times
    slower than `jax.lax.conv_transpose` (BENCHMARKS.md, GPU). For CUDA its forward and both gradients
    are now jax.lax's convolutions exactly; CPU and TPU keep the float32 result."""
    cfg = CONFIGS[name]
    args = [
        jax.ShapeDtypeStruct(s, jnp.bfloat16)
        for s in (cfg.y_shape, cfg.w_shape, (cfg.y_shape[0], cfg.c_out_per_group * cfg.groups, *cfg.out_spatial()))
    ]
    spec = cfg.spec()
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dilated_kernel(cfg.kernel, spec.dilation), spec.padding)]
    dn = lax_layout(cfg.ndim)
    ours = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method="vjp")  # noqa: E731
    lax_ = lambda y, w: jax.lax.conv_transpose(y, w, spec.stride, pads, spec.dilation, dn, transpose_kernel=True)  # noqa: E731

    def fwd_bwd(f):
        def fn(y, w, g):
            out, vjp = jax.vjp(f, y, w)
            return out, *vjp(g)

        return fn

    cuda = _products(_export_text(fwd_bwd(ours), args, ["cuda"])[1])
    assert cuda == _products(_export_text(fwd_bwd(lax_), args, ["cuda"])[1])
    assert all(line.endswith("xbf16>") for line in cuda), cuda
    for platform in ("cpu", "tpu"):  # the forward accumulates in float32 there
        forward = _products(_export_text(ours, args[:2], [platform])[1])
        assert len(forward) == 1 and forward[0].endswith("xf32>"), forward


@pytest.mark.parametrize(
    ("cfg", "cuda_forward"),
    [(CONFIGS["DCGAN 64 ch, mixed gradients"], "vjp"), (CONFIGS["DCGAN k4 s2 p1"], "subpixel")],
    ids=["DCGAN 64 ch", "DCGAN 3 ch"],
)
def test_auto_chooses_per_platform_in_one_export(cfg, cuda_forward):
    """The forward: subpixel on CPU (no lhs_dilation); on GPU the vjp lowering (lhs_dilation) with
    64 channels or more, subpixel below (`_gpu_method`, the FCN-8s rule); vjp on TPU."""
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in (cfg.y_shape, cfg.w_shape)]
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs)  # noqa: E731
    assert "lhs_dilate" not in _export_text(f, args, ["cpu"])[1]
    assert ("lhs_dilate" in _export_text(f, args, ["cuda"])[1]) == (cuda_forward == "vjp")
    assert "lhs_dilate" in _export_text(f, args, ["tpu"])[1]


def _forms(text):
    """The forms whose forward, and those whose derivatives (`jvp(...)` in the locations), a StableHLO module runs."""
    gradients = set(re.findall(r"jvp\(transconv_jax\.(\w+)\)", text))
    forward = set(re.findall(r"(?<!jvp\()transconv_jax\.(\w+)/", text))
    return forward, gradients


@pytest.mark.parametrize(
    ("cfg", "dtype", "cpu", "cuda"),
    [
        (LARGE_MIX, jnp.bfloat16, ({"subpixel"}, {"vjp", "subpixel"}), ({"vjp"}, {"vjp"})),
        (LARGE_MIX, jnp.float32, ({"subpixel"}, {"vjp", "subpixel"}), ({"vjp"}, {"vjp", "subpixel"})),
        (DILATED_STRIDE_1, jnp.float32, ({"scatter"}, {"vjp"}), ({"vjp"}, {"vjp"})),
    ],
    ids=["DCGAN bf16", "DCGAN f32", "dilated stride 1"],
)
def test_auto_takes_each_platforms_gradient_forms(cfg, dtype, cpu, cuda):
    """Each platform's export runs its own forms, forward and derivatives. In bfloat16 on a large
    k4 s2 layer the CPU and GPU policies differ in the kernel gradient (`auto_form`: one
    `_with_gradients` per platform); in float32 they agree on the gradients."""
    args = [jax.ShapeDtypeStruct(s, dtype) for s in (cfg.y_shape, cfg.w_shape)]
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs)  # noqa: E731

    for platform, expected in (("cpu", cpu), ("cuda", cuda)):
        assert _forms(_export_text(_fwd_bwd(f), args, [platform])[1]) == expected, platform


def test_differing_gradient_forms_compile_the_same_under_an_outer_jit():
    """Per-platform gradients put a `platform_dependent` around the derivatives. Under a jit around
    `conv_transpose` (a user's, or the library's own `_apply`), its index reached the backward as a
    residual, and XLA:CPU compiled the transposed branch with slow convolution layouts (an order
    of magnitude slower on the suite's dilated layer, when its gradients differed by platform); `auto_form` recomputes it (`jax.checkpoint`). Checked on XLA:CPU's
    compiled fwd+bwd: the same ops under an enclosing jit as without."""
    cfg = LARGE_MIX  # in bf16, the CPU and GPU policies' kernel gradients differ
    y, w = (jnp.asarray(a, jnp.bfloat16) for a in cfg.arrays())
    alone = lambda y, w: _dispatch.auto_form(y, w, cfg.spec())  # noqa: E731

    def ops(f):
        hlo = jax.jit(_fwd_bwd(f)).lower(y, w).compile().as_text()
        return re.findall(r"= (\S+ [\w-]+)\(", hlo[hlo.index("\nENTRY") :])

    assert ops(jax.jit(alone)) == ops(alone)


@pytest.mark.parametrize("name", ["DCGAN k4 s2 p1", "strided dilated grouped", "dilated stride 1"])
def test_multi_platform_export_runs_on_cpu_with_torch_numbers(name):
    cfg = CONFIGS.get(name, DILATED_STRIDE_1)
    y, w = cfg.arrays(6)
    f = lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs)  # noqa: E731
    exported, _ = _export_text(f, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (y, w)], ["cpu", "cuda", "tpu"])
    assert exported.platforms == ("cpu", "cuda", "tpu")
    assert_close(exported.call(y, w), torch_conv_transpose(y, w, cfg))


def test_no_backend_choice_in_python():
    """No module of the package asks jax which backend is the default: the choice is made at lowering."""
    import pathlib

    sources = pathlib.Path(tc.__file__).parent.glob("*.py")
    offenders = [p.name for p in sources if "default_backend" in p.read_text() and p.name != "_demo.py"]
    assert not offenders


CANARY = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from transconv_jax import _dispatch, _vjp
    from transconv_jax._spec import conv_transpose_spec
    y, w = jnp.ones((1, 1, 2, 3)), jnp.ones((1, 1, 4, 2))
    spec, _ = conv_transpose_spec(y, w, None, (3, 2), (1, 1), 0, 1, (2, 1), None, None, None)
    print(jax.jit(lambda y, w: _vjp.lhs_dilated(y, w, spec))(y, w).shape, flush=True)
    """
)


def test_canary_the_xla_cpu_abort_is_still_there():
    """The raw `lhs_dilation` lowering of the reported case, in a subprocess: it aborts on this jaxlib.

    When this fails, XLA:CPU no longer aborts: set `_vjp.XLA_CPU_FIXED_IN` to the installed jaxlib and the
    workaround goes for it (the gate of `xla_cpu_hazard`).
    """
    proc = subprocess.run([sys.executable, "-c", CANARY], capture_output=True, text=True, timeout=300)
    if _vjp.XLA_CPU_FIXED_IN is None:
        assert proc.returncode != 0 and "Check failed" in proc.stderr, (
            f"jaxlib {jax.lib.__version__}: the raw lowering no longer aborts (exit {proc.returncode}); "
            f"set transconv_jax._vjp.XLA_CPU_FIXED_IN = {tuple(jax.lib.__version__.split('.'))}"
        )
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
