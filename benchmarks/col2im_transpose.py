"""The scatter form's backward im2col, one slice per tap or axis by axis: fwd+bwd time, compile time, ops.

Run: PYTHONPATH=. .venv/bin/python benchmarks/col2im_transpose.py [--rounds 9] [--only NAME] [--quick] [--generator]

The scatter form's forward writes its output in one fused pass of one pad per kernel tap
(`_scatter.col2im_by_tap`); reverse mode transposes it into one slice per tap, each compiled on
its own. `_scatter._col2im` keeps that forward but takes its tangent, hence its transpose, axis by
axis (`col2im_by_axis`: `sum(kernel)` slices). `transposes_by_axis` picks between them;
this script measures both on every layer of the suite (or of the bench's DCGAN generator,
`--generator`), the same GEMM before them:

- fwd+bwd (value and both gradients, real upstream gradient), compiled ahead of time, medians of
  interleaved rounds, each variant checked against the other first;
- compile time of that fwd+bwd from a cold cache, and its compiled ops (`suite.compiled_kernels`);
- the same for `auto`'s fwd+bwd (which may take only some gradients from the scatter form), as
  shipped and with every backward im2col one slice per tap while tracing (`all_by_tap`; the same
  program where `auto` takes no gradient from the scatter form);
- which one the library takes (`one element` where the form needs no col2im, `_scatter._tile`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

from transconv_jax import _scatter  # noqa: E402
from transconv_jax._scatter import _col2im, _columns, col2im_by_tap, one_element  # noqa: E402
from transconv_jax._spec import transpose_spatial  # noqa: E402

VARIANTS = {"by tap": col2im_by_tap, "by axis": _col2im}


def scatter(layer: suite.Layer, col2im):
    """The scatter form on canonical `(N, C, *spatial)` arrays with the given col2im."""
    spec = suite.layer_spec(layer)
    out_spatial = transpose_spatial(layer.spatial, (layer.kernel,) * layer.ndim, spec)
    return lambda y, w: col2im(_columns(y, w, spec), spec, out_spatial)


@contextlib.contextmanager
def all_by_tap():
    """While tracing: the scatter form's backward im2col one slice per tap on every layer."""
    rule = _scatter.transposes_by_axis
    _scatter.transposes_by_axis = lambda kernel, stride: False
    try:
        yield
    finally:
        _scatter.transposes_by_axis = rule


def compile_cold(f, arrays):
    """`f`'s fwd+bwd compiled from a cold cache: the executable, the seconds and the compiled ops."""
    jax.clear_caches()
    start = time.perf_counter()
    compiled = jax.jit(suite.fwd_bwd(f)).lower(*arrays).compile()
    return compiled, time.perf_counter() - start, suite.compiled_kernels(compiled.as_text())


def main(argv=None) -> None:
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 9, argv)
    load = suite.Load()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, {rounds} interleaved rounds; fwd+bwd median ms")
    print("| layer | kernel taps / per axis | by tap ms | by axis ms | by axis / by tap | compile s (by tap, by axis) "
          "| ops (by tap, by axis) | auto: all by tap, as shipped (ms) | compile s | ops | library |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        arrays = tuple(jnp.asarray(a) for a in layer.arrays())
        programs = {name: scatter(layer, col2im) for name, col2im in VARIANTS.items()}
        built = {name: compile_cold(f, arrays) for name, f in programs.items()}
        with all_by_tap():
            built["auto by tap"] = compile_cold(suite.method_fn(layer, "auto"), arrays)
        built["auto"] = compile_cold(suite.method_fn(layer, "auto"), arrays)
        compiled = {name: c for name, (c, _, _) in built.items()}
        results = [compiled[name](*arrays) for name in VARIANTS]
        for a, b in zip(*results, strict=True):
            err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
            if err > 1e-5:
                raise AssertionError(f"{layer.name}: the two col2im transposes differ by {err:.1e}")
        ms = {name: t * 1e3 for name, t in suite.interleaved_medians(compiled, arrays, rounds, load).items()}
        s_, ops = ({name: b[i] for name, b in built.items()} for i in (1, 2))
        kernel = (layer.kernel,) * layer.ndim
        spec = suite.layer_spec(layer)
        by_axis = _scatter.transposes_by_axis(kernel, spec.stride)
        library = "one element" if one_element(layer.spatial, spec) else "by axis" if by_axis else "by tap"
        print(f"| {layer.name} | {np.prod(kernel)} / {sum(kernel)} | {ms['by tap']:.3g} | {ms['by axis']:.3g} "
              f"| {ms['by axis'] / ms['by tap']:.2f}x | {s_['by tap']:.2f}, {s_['by axis']:.2f} "
              f"| {ops['by tap']}, {ops['by axis']} | {ms['auto by tap']:.3g}, {ms['auto']:.3g} "
              f"| {s_['auto by tap']:.2f}, {s_['auto']:.2f} | {ops['auto by tap']}, {ops['auto']} | {library} |",
              flush=True)  # fmt: skip
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
