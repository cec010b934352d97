"""Where one contender's time goes on one layer: XLA:CPU's own ops, from a `jax.profiler` trace.

Run: PYTHONPATH=. .venv/bin/python benchmarks/profile_layer.py "DCGAN 16x16" [--method auto] [--fwd] [--top 12]
     PYTHONPATH=. .venv/bin/python benchmarks/profile_layer.py "DCGAN 16x16" --compile
     PYTHONPATH=. .venv/bin/python benchmarks/profile_layer.py "DCGAN 16x16" --codegen [--bias-relu]
     PYTHONPATH=. .venv/bin/python benchmarks/profile_layer.py "U-Net k3" --im2col

Compiles the contender's forward+backward (or forward, `--fwd`) on the layer of `suite.LAYERS`
whose name starts with the argument, runs it `--calls` times under `jax.profiler.trace`, and
prints the ops of the compiled program (XLA's fusions, named as in `compiled.as_text()`) by
their mean wall time per call, with the shape each writes. `--method jax.lax` profiles the
`jax.lax.conv_transpose` peer.

`--compile` splits compile time instead: for the contender and `jax.lax`, the seconds of tracing
and lowering and of XLA's compile, and the compiled ops, of fwd+bwd, of the input gradient alone
and of the kernel gradient alone (medians of 3 cold starts, interleaved).

`--codegen` splits XLA:CPU's compile of fwd+bwd by its own trace events (`jax.profiler.trace`
around `compile()`, medians of 3 cold starts, interleaved): the whole compile, the LLVM code
generation of the compiled kernels (`JitCompiler::Compile`), the emission of the thunks, and the
kernels XLA generates code for (`FusionCompiler::Compile`: loop fusions and the like, with their
ops summed and the largest named). Convolutions and dots run library code and need no kernel of
their own. `--bias-relu` compiles the layer as a network holds it instead: a bias and a ReLU after
it and a mean-square loss, its value and gradients (where XLA materializes the layer's output
before what follows it, the kernels differ from those of the bare fwd+bwd).

`--im2col` splits the same way the compile of the scatter form's backward im2col alone (the
transpose of `col2im_by_axis`, from the layer's cotangent to its columns) as it runs on one device,
its passes on four axes, and as it runs where GSPMD may shard it, on the columns' own axes
(`_scatter.unpartitioned` false), interleaved.

Caveat: the times are those of XLA's thunks as the profiler sees them. Convolutions and dots
that XLA:CPU hands to its Eigen thread pool run past the end of their thunk, so they show less
time than they take; loop fusions (copies, transposes, pads) and YNNPACK dot fusions
(`ynn_fusion`) show their own time. Thunks with no data dependence run at once, on the same
two cores. Use it to find copies and layout changes, not to add up a total.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

_SKIP = re.compile(r"^(\$|end: |ThunkExecutor|PjitFunction|PjRt|CommonPjRt|Slinky|Allocate|Handle|Parse|Python)")


def profile(fn, args, calls: int) -> dict[str, float]:
    """Mean seconds per call of each XLA op of the compiled `fn`."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e and not _SKIP.match(e["name"]):
            total[e["name"]] += e["dur"] * 1e-6 / calls
    return dict(total)


def shapes(hlo: str) -> dict[str, str]:
    """The shape each op of the entry computation writes, from the compiled HLO text."""
    return dict(re.findall(r"%([\w.\-]+) = ([a-z0-9]+\[[0-9,]*\])", suite.entry_computation(hlo)))


def compile_split(layer: suite.Layer, method: str, rounds: int = 3) -> None:
    """Print trace+lower and XLA compile seconds, and compiled ops, of `method` and jax.lax."""
    y, w, g = (jnp.asarray(a) for a in layer.arrays())
    programs = {}
    for name in (method, "jax.lax"):
        f = suite.layer_fn(layer, name)
        programs[name, "fwd+bwd"] = suite.fwd_bwd(f)
        programs[name, "input gradient"] = lambda y, w, g, f=f: jax.vjp(lambda y: f(y, w), y)[1](g)
        programs[name, "kernel gradient"] = lambda y, w, g, f=f: jax.vjp(lambda w: f(y, w), w)[1](g)
    times = {key: [] for key in programs}
    ops = {}
    for _ in range(rounds):
        for key, fn in programs.items():
            jax.clear_caches()
            start = time.perf_counter()
            lowered = jax.jit(fn).trace(y, w, g).lower()
            mid = time.perf_counter()
            compiled = lowered.compile()
            times[key].append((mid - start, time.perf_counter() - mid))
            ops[key] = suite.compiled_kernels(compiled.as_text())
    print(
        f"{layer.name} ({layer.describe()}); load average {os.getloadavg()[0]:.2f}; medians of {rounds} cold starts, s:"
    )
    print("| contender | program | trace + lower | XLA compile | compiled ops |")
    print("|---|---|---|---|---|")
    for (name, program), t in times.items():
        trace_s = statistics.median(a for a, _ in t)
        compile_s = statistics.median(b for _, b in t)
        print(f"| {name} | {program} | {trace_s:.3f} | {compile_s:.3f} | {ops[name, program]} |")


def compile_events(compiled_by) -> dict[str, float]:
    """`compiled_by()` (a cold `compile()`) under `jax.profiler.trace`: seconds of XLA:CPU's compile
    phases, and its generated kernels: how many, their ops summed, and the largest."""
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            compiled_by()
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    total = collections.Counter()
    for e in events:
        total[e["name"]] += e["dur"] * 1e-6
    kernels = [e["args"] for e in events if e["name"] == "FusionCompiler::Compile"]
    largest = max(kernels, key=lambda k: int(k["op_count"]), default={"op_count": 0, "module": "none"})
    return {
        "compile": total["PjRtCpuClient::Compile"],
        "codegen": total["JitCompiler::Compile"],
        "thunks": total["ThunkEmitter::EmitEntryComputation"],
        "kernels": len(kernels),
        "ops": sum(int(k["op_count"]) for k in kernels),
        "largest": f"{largest['op_count']} ({largest['module'].removesuffix('_kernel_module')})",
    }


def cold_compiles(lowerers: dict, rounds: int) -> dict[str, list]:
    """`compile_events` of each `lowerers[name]()` (a fresh `Lowered`: it keeps its executable) from a
    cold cache, `rounds` times, in each round's shuffled order."""
    runs = {name: [] for name in lowerers}
    for r in range(rounds):
        for name, lower in suite.in_turn(lowerers.items(), r):
            jax.clear_caches()
            runs[name].append(compile_events(lower().compile))
    return runs


def with_bias_relu(f, ndim: int):
    """The layer as a network holds it: `f(y, w)` plus a bias, a ReLU and a mean-square loss; the
    loss's value and its gradients in `y`, `w` and the bias."""
    shape = (1, -1) + (1,) * ndim

    def loss(y, w, b):
        return jnp.mean(jax.nn.relu(f(y, w) + b.reshape(shape)) ** 2)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))


def codegen_split(layer: suite.Layer, method: str, rounds: int = 3, bias_relu: bool = False) -> None:
    """Print XLA:CPU's compile of fwd+bwd split by phase (`compile_events`), for `method` and jax.lax;
    `bias_relu`: of the layer with a bias and a ReLU after it (`with_bias_relu`)."""
    y, w, g = (jnp.asarray(a) for a in layer.arrays())
    args = (y, w, jnp.zeros(g.shape[1], g.dtype) + 0.1) if bias_relu else (y, w, g)
    programs = {}
    for name in (method, "jax.lax"):
        f = suite.layer_fn(layer, name)
        programs[name] = with_bias_relu(f, layer.ndim) if bias_relu else suite.fwd_bwd(f)
    lowerers = {name: lambda fn=fn: jax.jit(fn).lower(*args) for name, fn in programs.items()}
    runs = cold_compiles(lowerers, rounds)
    what = "the loss of the layer with a bias and a ReLU, and its gradients" if bias_relu else "fwd+bwd"
    print(f"{layer.name} ({layer.describe()}); load average {os.getloadavg()[0]:.2f}; XLA:CPU's compile of "
          f"{what}, medians of {rounds} cold starts, s:")  # fmt: skip
    print(
        "| contender | XLA compile | LLVM codegen | thunk emission | generated kernels | their ops | largest kernel, ops |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, samples in runs.items():
        med = {k: statistics.median(s[k] for s in samples) for k in ("compile", "codegen", "thunks")}
        last = samples[-1]
        print(f"| {name} | {med['compile']:.3f} | {med['codegen']:.3f} | {med['thunks']:.3f} | {last['kernels']} "
              f"| {last['ops']} | {last['largest']} |")  # fmt: skip


def im2col_split(layer: suite.Layer, rounds: int = 3) -> None:
    """Print XLA:CPU's compile of the backward's im2col of `layer` (`compile_events`), its passes on four
    axes (one device) against on the columns' own axes (`_scatter.unpartitioned` false)."""
    from transconv_jax import _scatter

    spec = suite.layer_spec(layer)
    cols = jax.ShapeDtypeStruct((layer.c_out, *(layer.kernel,) * layer.ndim, layer.batch, *layer.spatial), jnp.float32)
    g = jax.ShapeDtypeStruct(layer.out_shape, jnp.float32)
    col2im = lambda c: _scatter.col2im_by_axis(c, spec, layer.out_shape[2:])  # noqa: E731

    def lower(unpartitioned):
        shipped, _scatter.unpartitioned = _scatter.unpartitioned, unpartitioned
        try:
            im2col = jax.linear_transpose(col2im, cols)  # traces col2im
            return jax.jit(lambda g: im2col(g)[0]).lower(g)
        finally:
            _scatter.unpartitioned = shipped

    variants = {"four axes (one device)": _scatter.unpartitioned, "the columns' axes": lambda x: False}
    runs = cold_compiles({name: functools.partial(lower, u) for name, u in variants.items()}, rounds)
    print(f"{layer.name} ({layer.describe()}); load average {os.getloadavg()[0]:.2f}; XLA:CPU's compile of the "
          f"backward's im2col (`col2im_by_axis` transposed), medians of {rounds} cold starts, s:")  # fmt: skip
    print("| passes on | XLA compile | LLVM codegen | generated kernels | their ops | largest kernel, ops |")
    print("|---|---|---|---|---|---|")
    for name, samples in runs.items():
        med = {k: statistics.median(s[k] for s in samples) for k in ("compile", "codegen")}
        last = samples[-1]
        print(f"| {name} | {med['compile']:.3f} | {med['codegen']:.3f} | {last['kernels']} | {last['ops']} "
              f"| {last['largest']} |")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layer", help="the start of a layer's name in suite.LAYERS (or suite.GENERATOR, suite.TINY)")
    parser.add_argument("--method", default="auto", help="a method of conv_transpose, or jax.lax")
    parser.add_argument("--fwd", action="store_true", help="the forward alone (default: forward+backward)")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="split compile time instead of profiling")
    parser.add_argument("--codegen", action="store_true", help="split XLA's compile of fwd+bwd by its phases")
    parser.add_argument("--bias-relu", action="store_true", help="--codegen of the layer with a bias and a ReLU")
    parser.add_argument("--im2col", action="store_true", help="split the compile of the backward's im2col alone")
    args = parser.parse_args(argv)
    (layer,) = [la for la in (*suite.LAYERS, *suite.GENERATOR, *suite.TINY) if la.name.startswith(args.layer)][:1]
    if args.compile:
        compile_split(layer, args.method)
        return
    if args.codegen:
        codegen_split(layer, args.method, bias_relu=args.bias_relu)
        return
    if args.im2col:
        im2col_split(layer)
        return
    f = suite.layer_fn(layer, args.method)
    y, w, g = (jnp.asarray(a) for a in layer.arrays())
    if args.fwd:
        compiled, call_args = jax.jit(f).lower(y, w).compile(), (y, w)
    else:
        fb = jax.jit(suite.fwd_bwd(f))
        compiled, call_args = fb.lower(y, w, g).compile(), (y, w, g)
    times, out_shapes = profile(compiled, call_args, args.calls), shapes(compiled.as_text())
    print(f"{layer.name} ({layer.describe()}), {args.method}, {'forward' if args.fwd else 'fwd+bwd'}; "
          f"load average {os.getloadavg()[0]:.2f}; ms per call of XLA's ops (see the caveat in the docstring):")  # fmt: skip
    for name, t in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {t * 1e3:8.2f}  {name:<32} {out_shapes.get(name, '')}")


if __name__ == "__main__":
    main()
