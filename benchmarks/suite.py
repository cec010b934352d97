"""The decoder-layer suite that `bench.py` (CPU) and `gpu_bench.py` (GPU) share.

Layers of real decoders; the contenders (every form of transconv_jax, `auto`,
`jax.lax.conv_transpose` itself, Flax and PyTorch), each built for one layer and dtype on the
default device; a check of every contender's value and both gradients against PyTorch in float64
before it is timed; interleaved timing; and the machine's load average while it ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import transconv_jax as tc
from transconv_jax._conv import flip_kernel
from transconv_jax._dispatch import FORMS, auto_forms, auto_method
from transconv_jax._spec import Spec, conv_transpose_spec, dilated_kernel, lax_layout

METHODS = ("auto", *FORMS)  # every `method=` of `conv_transpose`
AUTO_CHANNELS_LAST = "auto N*C"  # `auto` on channels-last arrays, as the Flax layers call it
SLOW_S = 0.5  # a contender slower than this per fwd+bwd is timed in 3 rounds only
MAX_REPEAT = 200  # most back-to-back calls in one timing sample (`time_contenders(sample_s=...)`)
# A machine is "quiet" when the 1-min load average was at most QUIET_BEFORE per core before the
# run and at most QUIET_DURING per core while it ran (the bench itself keeps every core busy).
QUIET_BEFORE, QUIET_DURING = 0.25, 1.25


@dataclasses.dataclass(frozen=True)
class Layer:
    """One transposed convolution of a real decoder, PyTorch's arguments."""

    name: str
    batch: int
    c_in: int
    c_out: int
    spatial: tuple[int, ...]
    kernel: int
    stride: int
    padding: int = 0
    output_padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups)  # fmt: skip

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, self.c_in, *self.spatial)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.c_in, self.c_out // self.groups, *(self.kernel,) * self.ndim)

    @property
    def out_shape(self) -> tuple[int, ...]:
        kw = {k: v for k, v in self.kwargs.items() if k != "groups"}
        return (self.batch, self.c_out, *tc.conv_transpose_output_shape(self.spatial, self.kernel, **kw))

    @property
    def flops(self) -> float:
        """Useful multiply-adds x 2 of one pass: every input element times its kernel taps."""
        taps = self.kernel**self.ndim * self.c_out // self.groups
        return 2.0 * self.batch * math.prod(self.spatial) * self.c_in * taps

    def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input, kernel (PyTorch's default scale) and an upstream gradient, float32."""
        rng = np.random.default_rng(seed)
        y = rng.standard_normal(self.y_shape, dtype=np.float32)
        w = rng.standard_normal(self.w_shape, dtype=np.float32) / np.float32(
            math.sqrt(self.c_in * self.kernel**self.ndim)
        )
        return y, w, rng.standard_normal(self.out_shape, dtype=np.float32)

    def describe(self) -> str:
        extra = "".join(f" {k}{v}" for k, v in (("p", self.padding), ("op", self.output_padding)) if v)
        extra += f" d{self.dilation}" * (self.dilation > 1) + f" g{self.groups}" * (self.groups > 1)
        shape = "x".join(map(str, self.spatial))
        return f"{self.batch}x{self.c_in}x{shape} -> {self.c_out} ch, k{self.kernel} s{self.stride}{extra}"


LAYERS = (
    Layer("DCGAN 16x16", 8, 256, 128, (16, 16), 4, 2, 1),
    Layer("DCGAN 32x32", 8, 128, 64, (32, 32), 4, 2, 1),
    Layer("U-Net k2 s2", 8, 128, 64, (32, 32), 2, 2),
    Layer("U-Net k3 s2 op1", 8, 128, 64, (32, 32), 3, 2, 1, 1),
    Layer("FCN-8s x8", 2, 21, 21, (32, 32), 16, 8, 4),
    Layer("HiFi-GAN 1-D", 4, 512, 256, (200,), 16, 8, 4),
    Layer("V-Net 3-D k2 s2", 2, 64, 32, (16, 16, 16), 2, 2),
    Layer("3-D U-Net k3 op1", 2, 64, 32, (16, 16, 16), 3, 2, 1, 1),
    Layer("grouped (32 groups)", 8, 256, 256, (16, 16), 4, 2, 1, groups=32),
    Layer("dilated (d2)", 8, 64, 64, (32, 32), 3, 1, 2, dilation=2),
    Layer("stride 1", 8, 128, 64, (32, 32), 3, 1, 1),
)
TINY = (
    Layer("tiny 2-D k4 s2", 2, 8, 4, (8, 8), 4, 2, 1),
    Layer("tiny 1-D k3 s2 op1 g2", 2, 8, 4, (16,), 3, 2, 1, 1, groups=2),
)
# DCGAN's generator (Radford et al.), without BatchNorm: 100 -> 512 ch at 4x4, then doubling to 64x64 RGB.
GENERATOR = (
    Layer("G1 1x1 -> 4x4", 8, 100, 512, (1, 1), 4, 1, 0),
    Layer("G2 4x4 -> 8x8", 8, 512, 256, (4, 4), 4, 2, 1),
    Layer("G3 8x8 -> 16x16", 8, 256, 128, (8, 8), 4, 2, 1),
    Layer("G4 16x16 -> 32x32", 8, 128, 64, (16, 16), 4, 2, 1),
    Layer("G5 32x32 -> 64x64", 8, 64, 3, (32, 32), 4, 2, 1),
)
# Stride-1 layers beyond the suite's one (`auto`'s rule 3 by channels): few input channels on large
# grids, equal channels, more input than output channels, a wider kernel, 1-D, dilated with few channels;
# and 3-D ones.
STRIDE_1 = (
    Layer("s1 4x16x128x128 -> 16", 4, 16, 16, (128, 128), 3, 1, 1),
    Layer("s1 8x32x64x64 -> 32", 8, 32, 32, (64, 64), 3, 1, 1),
    Layer("s1 8x32x32x32 -> 64", 8, 32, 64, (32, 32), 3, 1, 1),
    Layer("s1 8x64x32x32 -> 64", 8, 64, 64, (32, 32), 3, 1, 1),
    Layer("s1 8x64x64x64 -> 32", 8, 64, 32, (64, 64), 3, 1, 1),
    Layer("s1 8x128x16x16 -> 64", 8, 128, 64, (16, 16), 3, 1, 1),
    Layer("s1 8x256x8x8 -> 256", 8, 256, 256, (8, 8), 3, 1, 1),
    Layer("s1 8x128x32x32 -> 64 k5", 8, 128, 64, (32, 32), 5, 1, 2),
    Layer("s1 1-D 4x128x400 -> 128 k7", 4, 128, 128, (400,), 7, 1, 3),
    Layer("s1 d2 4x16x128x128 -> 16", 4, 16, 16, (128, 128), 3, 1, 2, dilation=2),
    Layer("s1 d2 8x32x64x64 -> 32", 8, 32, 32, (64, 64), 3, 1, 2, dilation=2),
    # 3-D (rule 3 in 3-D: by input channels and the input's im2col windows)
    Layer("s1 3-D 2x16x32x32x32 -> 16", 2, 16, 16, (32, 32, 32), 3, 1, 1),
    Layer("s1 3-D 2x32x16x16x16 -> 32", 2, 32, 32, (16, 16, 16), 3, 1, 1),
    Layer("s1 3-D 2x32x16x16x16 -> 64", 2, 32, 64, (16, 16, 16), 3, 1, 1),
    Layer("s1 3-D 2x64x16x16x16 -> 64", 2, 64, 64, (16, 16, 16), 3, 1, 1),
    Layer("s1 3-D 2x64x16x16x16 -> 32", 2, 64, 32, (16, 16, 16), 3, 1, 1),
    Layer("s1 3-D 2x128x8x8x8 -> 64", 2, 128, 64, (8, 8, 8), 3, 1, 1),
    Layer("s1 3-D 2x32x16x16x16 -> 32 k5", 2, 32, 32, (16, 16, 16), 5, 1, 2),
    Layer("s1 3-D d2 2x32x16x16x16 -> 32", 2, 32, 32, (16, 16, 16), 3, 1, 2, dilation=2),
)
# 2-D k4 s2 p1 layers (DCGAN's) of 2**20 to 2**23 columns (N * H * W * 16 taps * C_out), around the size
# where `auto`'s kernel gradient changes form (`_dispatch.scatter_kernel_gradient`); and three 3-D ones.
K4S2 = (
    Layer("k4s2 8x128x8x8 -> 128", 8, 128, 128, (8, 8), 4, 2, 1),
    Layer("k4s2 8x256x16x16 -> 128", 8, 256, 128, (16, 16), 4, 2, 1),
    Layer("k4s2 4x512x16x16 -> 256", 4, 512, 256, (16, 16), 4, 2, 1),
    Layer("k4s2 8x64x32x32 -> 32", 8, 64, 32, (32, 32), 4, 2, 1),
    Layer("k4s2 16x128x16x16 -> 64", 16, 128, 64, (16, 16), 4, 2, 1),
    Layer("k4s2 8x256x16x16 -> 256", 8, 256, 256, (16, 16), 4, 2, 1),
    Layer("k4s2 16x256x16x16 -> 128", 16, 256, 128, (16, 16), 4, 2, 1),
    Layer("k4s2 8x128x32x32 -> 64", 8, 128, 64, (32, 32), 4, 2, 1),
    # 3-D (a 3-D GAN generator's): the subpixel forward's phase convolution, GEMMs on CPU
    Layer("k4s2 3-D 4x512x4x4x4 -> 256", 4, 512, 256, (4, 4, 4), 4, 2, 1),
    Layer("k4s2 3-D 4x256x8x8x8 -> 128", 4, 256, 128, (8, 8, 8), 4, 2, 1),
    Layer("k4s2 3-D 2x64x16x16x16 -> 32", 2, 64, 32, (16, 16, 16), 4, 2, 1),
)
TINY_GENERATOR = (
    Layer("g1 1x1 -> 4x4", 2, 8, 8, (1, 1), 4, 1, 0),
    Layer("g2 4x4 -> 8x8", 2, 8, 4, (4, 4), 4, 2, 1),
    Layer("g3 8x8 -> 16x16", 2, 4, 3, (8, 8), 4, 2, 1),
)


def layers_from_arguments(description: str, rounds: int, argv=None) -> tuple[list[Layer], int]:
    """The layers and rounds a per-layer script was asked for: `--rounds`, `--only NAME` (layers whose
    name starts with it), `--quick` (the tiny layers, 2 rounds: a smoke test), `--generator` (the DCGAN
    generator's layers), `--stride-1` (`STRIDE_1`), `--k4s2` (`K4S2`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--only", help="layers whose name starts with this")
    parser.add_argument("--quick", action="store_true", help="the tiny layers, 2 rounds (a smoke test)")
    parser.add_argument("--generator", action="store_true", help="the DCGAN generator's layers")
    parser.add_argument("--stride-1", action="store_true", help="stride-1 layers beyond the suite's")
    parser.add_argument("--k4s2", action="store_true", help="2-D k4 s2 layers of 2**20 to 2**23 columns")
    args = parser.parse_args(argv)
    sets = ((args.quick, TINY), (args.generator, GENERATOR), (args.stride_1, STRIDE_1), (args.k4s2, K4S2))
    layers = next((chosen for asked, chosen in sets if asked), LAYERS)
    layers = [la for la in layers if not args.only or la.name.startswith(args.only)]
    return layers, 2 if args.quick else args.rounds


def model_step(layers, conv: Callable) -> tuple[Callable, tuple]:
    """A generator built from `layers` with `conv` (`conv(layer)` is `f(y, w)`): the layers stacked
    with ReLU between them and tanh at the end, the loss `sum(out * g)`. Returns its training step,
    `jax.value_and_grad(loss)` (not jitted), and the step's arguments `(kernels, z)`."""
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal(layer.w_shape, dtype=np.float32) * 0.02) for layer in layers]
    z = jnp.asarray(rng.standard_normal(layers[0].y_shape, dtype=np.float32))
    g = jnp.asarray(rng.standard_normal(layers[-1].out_shape, dtype=np.float32))
    fns = [conv(layer) for layer in layers]

    def loss(ws, z):
        h = z
        for i, (f, w) in enumerate(zip(fns, ws, strict=True)):
            h = f(h, w)
            h = jnp.tanh(h) if i == len(fns) - 1 else jax.nn.relu(h)
        return jnp.sum(h * g)

    return jax.value_and_grad(loss), (ws, z)


def model_compile(layers, convs: dict[str, Callable], repeats: int) -> dict:
    """Compile and first call of `model_step(layers, convs[name])` for each name:
    `jit(step).lower().compile()` and the first call from a cold cache, `repeats` times in each
    round's shuffled order. Per name, the run with the median total: `{"compile": s, "first_call": s}`."""
    samples = {name: [] for name in convs}
    for name, conv in [item for r in range(repeats) for item in in_turn(convs.items(), r)]:
        step, args = model_step(layers, conv)
        jax.clear_caches()
        start = time.perf_counter()
        compiled = jax.jit(step).lower(*args).compile()
        mid = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        samples[name].append((mid - start, time.perf_counter() - mid))
    result = {}
    for name, runs in samples.items():
        compile_s, first_call = sorted(runs, key=sum)[len(runs) // 2]
        result[name] = {"compile": compile_s, "first_call": first_call}
    return result


def layer_spec(layer: Layer) -> Spec:
    """The canonical `Spec` of a layer."""
    y, w = (jax.ShapeDtypeStruct(s, jnp.float32) for s in (layer.y_shape, layer.w_shape))
    kw = dict(bias=None, output_shape=None, dimension_numbers=None, precision=None)
    spec, _ = conv_transpose_spec(y, w, **layer.kwargs, **kw)
    return spec


def auto_pick(layer: Layer, platform: str, derivatives: str | None = None) -> str:
    """The form `method="auto"` runs for `layer` on `platform` ('cpu', 'cuda', ...); with `derivatives`
    ("input" or "kernel"), the form whose gradient it takes."""
    return auto_method(layer_spec(layer), layer.y_shape, layer.w_shape, platform=platform, derivatives=derivatives)


def auto_label(layer: Layer, platform: str, dtype=None) -> str:
    """The forms `method="auto"` runs for `layer` on `platform`: 'vjp' when one form does it all, else
    'forward / input gradient / kernel gradient', e.g. 'vjp / scatter / scatter'."""
    forms = auto_forms(layer_spec(layer), layer.y_shape, layer.w_shape, platform, dtype)
    return forms[0] if len(set(forms)) == 1 else " / ".join(forms)


# ------------------------------------------------------------------------------ contenders


@dataclasses.dataclass
class Contender:
    """One implementation's compiled forward and forward+backward, with their arguments."""

    fwd: Callable
    fwd_bwd: Callable
    args: tuple
    compile_s: dict = dataclasses.field(default_factory=dict)  # "fwd", "fwd_bwd": seconds
    compile_samples: list = dataclasses.field(default_factory=list)  # more cold fwd+bwd compiles (bench.py)
    kernels: int | None = None  # XLA's compiled fwd+bwd: ops that run code (fusions, convolutions, dots, ...)
    memory: dict = dataclasses.field(default_factory=dict)  # bytes: XLA's plan of one fwd+bwd
    sync: Callable = lambda out: jax.block_until_ready(out)
    channels_last: bool = False  # Flax: outputs `(N, *spatial, C)`, kernel `(*k, C_out, C_in)`


def method_fn(layer: Layer, method: str) -> Callable:
    """`conv_transpose(..., method=method)`."""
    return lambda y, w: tc.conv_transpose(y, w, **layer.kwargs, method=method)


def layer_fn(layer: Layer, name: str) -> Callable:
    """`f(y, w)` of a method of `conv_transpose` (`method_fn`) or of 'jax.lax' (`jax_lax_fn`)."""
    return jax_lax_fn(layer) if name == "jax.lax" else method_fn(layer, name)


def jax_lax_fn(layer: Layer) -> Callable:
    """`jax.lax.conv_transpose(..., transpose_kernel=True)` with PyTorch's padding as explicit pairs.

    It has no groups: grouped layers get the convolution it would emit, with `feature_group_count`.
    """
    spec = layer_spec(layer)
    dk = dilated_kernel((layer.kernel,) * layer.ndim, spec.dilation)
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding)]
    dn = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}[layer.ndim]
    if layer.groups == 1:
        return lambda y, w: jax.lax.conv_transpose(y, w, spec.stride, pads, spec.dilation, dn, transpose_kernel=True)
    ones = (1,) * layer.ndim
    return lambda y, w: jax.lax.conv_general_dilated(y, flip_kernel(w, layer.groups), ones, pads, spec.stride,
                                                     spec.dilation, dn, feature_group_count=layer.groups)  # fmt: skip


def fwd_bwd(f: Callable) -> Callable:
    """`(y, w, g) -> (f(y, w), *vjp(f)(g))`: the value and both gradients for an upstream gradient `g`."""

    def fn(y, w, g):
        out, vjp = jax.vjp(f, y, w)
        return out, *vjp(g)

    return fn


def in_a_loss(f: Callable) -> Callable:
    """`(y, w, target) -> (loss, grad_y, grad_w)` of `0.5 * sum((f(y, w) - target) ** 2)`: the
    cotangent, `f(y, w) - target`, depends on the forward, so the backward waits for it, as in a
    training step. (`fwd_bwd`'s cotangent is an argument: XLA may run the backward beside the
    forward, with both their buffers live.)"""

    def fn(y, w, target):
        loss = lambda y, w: 0.5 * jnp.sum((f(y, w) - target) ** 2)  # noqa: E731
        value, (gy, gw) = jax.value_and_grad(loss, argnums=(0, 1))(y, w)
        return value, gy, gw

    return fn


def in_turn(items, r: int) -> list:
    """`items` in the order of round `r`: shuffled, seeded by `r`. A program timed right after a larger
    one can run slower (its data out of the caches), so no contender always follows the same one."""
    items = list(items)
    random.Random(r).shuffle(items)
    return items


def interleaved_medians(fns: dict[str, Callable], args: tuple, rounds: int, load: Load | None = None) -> dict:
    """Median seconds of each compiled function on `args`, timed in interleaved rounds, each in its
    own order (`in_turn`)."""
    times = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in in_turn(fns.items(), r):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
        if load is not None:
            load.sample()
    return {name: statistics.median(t) for name, t in times.items()}


def jax_contender(f: Callable, y, w, g, dtype) -> Contender:
    """Jit `f(y, w)` and `vjp(f)(g)`, each compiled ahead of time and timed while it compiles."""

    args = tuple(jnp.asarray(a, dtype) for a in (y, w, g))
    c = Contender(None, None, args)
    for name, fn, n in (("fwd", f, 2), ("fwd_bwd", fwd_bwd(f), 3)):
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args[:n]).compile()
        c.compile_s[name] = time.perf_counter() - start
        setattr(c, name, (lambda y, w, g, fn=compiled: fn(y, w)) if n == 2 else compiled)
    c.kernels = compiled_kernels(compiled.as_text())
    analysis = compiled.memory_analysis()
    if analysis is not None:
        c.memory = {"temp": analysis.temp_size_in_bytes, "output": analysis.output_size_in_bytes}
    return c


_NO_CODE = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element"}


def compiled_kernels(hlo: str) -> int:
    """The ops of a compiled program's entry computation that run code: XLA compiles each of them
    (a fusion, a convolution, a dot, a copy...), so their number drives its compile time."""
    return sum(op not in _NO_CODE for op in re.findall(r"= \S+ ([\w-]+)\(", entry_computation(hlo)))


def ynn_convolutions(hlo: str) -> int:
    """The convolutions of a compiled XLA:CPU program that YNNPACK runs: the entry computation's
    `__ynn_fusion` ops whose fused computation holds a convolution (XLA:CPU hands dots to YNNPACK
    the same way; those are not counted)."""
    bodies = dict(re.findall(r"\n(%[\w.-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S))
    fusions = re.findall(r"calls=(%[\w.-]+), [^\n]*__ynn_fusion", entry_computation(hlo))
    return sum(" convolution(" in bodies.get(name, "") for name in fusions)


def entry_computation(hlo: str) -> str:
    """The entry computation of a compiled program's HLO text (`compiled.as_text()`)."""
    return hlo[hlo.index("\nENTRY") :]


def flax_contender(layer: Layer, y, w, g, dtype) -> Contender:
    """Flax's `linen.ConvTranspose(transpose_kernel=True)` on channels-last data (its own layout), no bias."""
    if layer.groups > 1:
        raise NotImplementedError("flax.linen.ConvTranspose has no groups")
    import flax.linen as nn

    spec = layer_spec(layer)
    dk = dilated_kernel((layer.kernel,) * layer.ndim, spec.dilation)
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding)]
    module = nn.ConvTranspose(layer.c_out, (layer.kernel,) * layer.ndim, (layer.stride,) * layer.ndim, pads,
                              (layer.dilation,) * layer.ndim, use_bias=False, transpose_kernel=True,
                              dtype=dtype, param_dtype=dtype)  # fmt: skip
    f = lambda y, k: module.apply({"params": {"kernel": k}}, y)
    return _channels_last_contender(f, y, w, g, dtype)


def _channels_last_contender(f: Callable, y, w, g, dtype) -> Contender:
    """`jax_contender` of `f` on channels-last `y` and `g` and a `(*k, C_out, C_in)` kernel (flax's for
    `transpose_kernel`), which `check` reads back into PyTorch's layout."""
    last = lambda a: np.moveaxis(a, 1, -1)  # noqa: E731
    kernel = w.transpose(*range(2, w.ndim), 1, 0)
    return dataclasses.replace(jax_contender(f, last(y), kernel, last(g), dtype), channels_last=True)


def auto_channels_last_contender(layer: Layer, y, w, g, dtype) -> Contender:
    """`conv_transpose(method="auto")` on channels-last arrays with channels-last dimension numbers, as
    the Flax layers call it (the kernel here `(*k, C_out, C_in)`, `HWOI`-style, where the layers hold
    `HWIO`: only the kernel's transpose differs)."""
    dn = lax_layout(layer.ndim, channels_last=True)
    dn = (dn[0], dn[1][:-2] + "OI", dn[2])
    f = lambda y, k: tc.conv_transpose(y, k, **layer.kwargs, dimension_numbers=dn)  # noqa: E731
    return _channels_last_contender(f, y, w, g, dtype)


def torch_device() -> str:
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_op(ndim: int) -> Callable:
    """PyTorch's `F.conv_transpose{1,2,3}d` for `ndim` spatial axes."""
    import torch.nn.functional as F

    return {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[ndim]


def torch_contender(layer: Layer, y, w, g, dtype) -> Contender:
    """`F.conv_transpose{1,2,3}d` (oneDNN on CPU, cuDNN on CUDA) on the same numbers."""
    import torch

    op = torch_op(layer.ndim)
    dev, tdtype = torch_device(), {"float32": torch.float32, "bfloat16": torch.bfloat16}[np.dtype(dtype).name]
    ty, tw, tg = (torch.tensor(a).to(dev, tdtype) for a in (y, w, g))
    ty.requires_grad_(), tw.requires_grad_()

    def fwd(y, w, g):
        with torch.no_grad():
            return op(y, w, **layer.kwargs)

    def fwd_bwd(y, w, g):
        y.grad = w.grad = None
        out = op(y, w, **layer.kwargs)
        out.backward(g)
        return out, y.grad, w.grad

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    return Contender(fwd, fwd_bwd, (ty, tw, tg), sync=lambda out: sync())


def build(layer: Layer, name: str, dtype=jnp.float32) -> Contender:
    """One contender for `layer`: a method name, `AUTO_CHANNELS_LAST`, 'jax.lax', 'flax' or 'torch'. Raises `ValueError`
    (e.g. the matrix form's memory guard) or `NotImplementedError` when it cannot run the layer."""
    y, w, g = layer.arrays()
    if name == "torch":
        return torch_contender(layer, y, w, g, dtype)
    if name == "flax":
        return flax_contender(layer, y, w, g, dtype)
    if name == AUTO_CHANNELS_LAST:
        return auto_channels_last_contender(layer, y, w, g, dtype)
    f = layer_fn(layer, name)
    return jax_contender(f, y, w, g, dtype)


# ------------------------------------------------------------------------------ value check


def reference(layer: Layer, dtype) -> tuple[np.ndarray, ...]:
    """PyTorch's value and gradients in float64, from the inputs rounded to `dtype`."""
    import torch

    op = torch_op(layer.ndim)
    rounded = (np.asarray(jnp.asarray(a, dtype).astype(jnp.float32)) for a in layer.arrays())
    ty, tw, tg = (torch.tensor(a, dtype=torch.float64, device=torch_device()) for a in rounded)
    ty.requires_grad_(), tw.requires_grad_()
    out = op(ty, tw, **layer.kwargs)
    out.backward(tg)
    return tuple(t.detach().cpu().numpy() for t in (out, ty.grad, tw.grad))


def tolerance(dtype) -> float:
    """Largest error allowed, relative to the largest magnitude of PyTorch's float64 result.

    float32 on CPU: 1e-4. On a GPU, XLA and cuDNN may use TF32 for float32 convolutions (10-bit
    mantissa), and bfloat16 has an 8-bit one: 2e-2."""
    return 1e-4 if np.dtype(dtype) == np.float32 and jax.default_backend() == "cpu" else 2e-2


def check(c: Contender, ref: tuple[np.ndarray, ...]) -> float:
    """The worst relative error of a contender's value, grad y and grad w against `ref`."""
    out = c.fwd_bwd(*c.args)
    c.sync(out)
    worst = 0.0
    for i, (a, b) in enumerate(zip(out, ref, strict=True)):
        a = _numpy(a)
        if c.channels_last:  # back to PyTorch's layout
            a = np.moveaxis(a, -1, 1) if i < 2 else a.transpose(a.ndim - 1, a.ndim - 2, *range(a.ndim - 2))
        worst = max(worst, relative_error(a, b))
    return worst


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference of `a` from `b`, relative to `b`'s largest magnitude (or 1, if smaller)."""
    return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(jnp.asarray(a).astype(jnp.float32), np.float64)


# ------------------------------------------------------------------------------ load and timing


@dataclasses.dataclass
class Load:
    """The 1-min load average before, during (sampled after each round) and after a run."""

    before: float = dataclasses.field(default_factory=lambda: os.getloadavg()[0])
    during: list = dataclasses.field(default_factory=list)
    after: float | None = None

    def sample(self) -> None:
        self.during.append(os.getloadavg()[0])

    def finish(self) -> Load:
        self.after = os.getloadavg()[0]
        return self

    @property
    def quiet(self) -> bool:
        cores = os.cpu_count() or 1
        return self.before <= QUIET_BEFORE * cores and max(self.during, default=0.0) <= QUIET_DURING * cores

    def describe(self) -> str:
        cores = os.cpu_count() or 1
        text = (f"1-min load average {self.before:.2f} before, at most {max(self.during, default=0.0):.2f} "
                f"during, {self.after if self.after is not None else float('nan'):.2f} after, on {cores} cores")  # fmt: skip
        if self.quiet:
            return f"{text}: quiet (before <= {QUIET_BEFORE * cores:g}, during <= {QUIET_DURING * cores:g})."
        return (f"**NOT QUIET: {text}** (quiet means before <= {QUIET_BEFORE * cores:g} and during <= "
                f"{QUIET_DURING * cores:g}); other programs shared the machine, so these timings are noisy.")  # fmt: skip


def time_once(c: Contender, fn: Callable, repeat: int = 1) -> float:
    """Seconds per call of `fn` over `repeat` back-to-back calls, waited for once at the end."""
    start = time.perf_counter()
    for _ in range(repeat - 1):
        fn(*c.args)
    c.sync(fn(*c.args))
    return (time.perf_counter() - start) / repeat


def time_contenders(
    live: dict[str, Contender], rounds: int, load: Load, sample_s: float = 0.0
) -> dict[str, dict[str, float]]:
    """Interleave the contenders: each round runs every one once (forward, then fwd+bwd), each round
    in its own order (`in_turn`); medians.

    With `sample_s` (the GPU bench), each sample is as many back-to-back calls as take about that
    long (at most `MAX_REPEAT`), so a sample measures the device's time per call, not one call's
    dispatch and wait; with 0 (the CPU bench) each sample is one call."""
    times = {k: {"fwd": [], "fwd_bwd": []} for k in live}
    repeat = {}
    for name, c in live.items():  # warm-up, and how many calls make one sample
        for phase in ("fwd", "fwd_bwd"):
            once = time_once(c, getattr(c, phase))
            if sample_s:
                once = time_once(c, getattr(c, phase))
            repeat[name, phase] = max(1, min(MAX_REPEAT, round(sample_s / once))) if sample_s else 1
    for r in range(rounds):
        for name, c in in_turn(live.items(), r):
            if r >= 3 and statistics.median(times[name]["fwd_bwd"]) > SLOW_S:
                continue
            for phase in ("fwd", "fwd_bwd"):
                times[name][phase].append(time_once(c, getattr(c, phase), repeat[name, phase]))
        load.sample()
    return {k: {p: statistics.median(v) for p, v in t.items()} for k, t in times.items()}


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")
