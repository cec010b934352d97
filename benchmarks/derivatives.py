"""Which form computes each gradient fastest: the input gradient and the kernel gradient, apart.

Run: PYTHONPATH=. .venv/bin/python benchmarks/derivatives.py [--rounds 7] [--only NAME] [--quick] [--generator]

For every layer of the decoder suite (`suite.LAYERS`; with `--generator`, the five layers of the
bench's DCGAN generator, `suite.GENERATOR`):

1. each form's input gradient (`vjp(lambda y: f(y, w))`) and kernel gradient
   (`vjp(lambda w: f(y, w))`), with a real upstream gradient passed as an argument, compiled
   ahead of time, timed in interleaved rounds (medians), each checked against the vjp form's
   first. The last columns name the fastest form and the one `auto` takes
   (`auto_method(..., derivatives="input" / "kernel")`).
2. fwd+bwd (value and both gradients) of `auto` as shipped, of its forward form with that form's
   own gradients, and of its forward with each gradient from the form that was fastest at it
   in step 1 (`mixed`): a gradient faster alone is not always faster in one program with the
   other, when a form shares work between its two gradients.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

from transconv_jax._dispatch import _named_form  # noqa: E402

FORMS = ("vjp", "scatter", "subpixel")  # matmul: memory-guarded on every layer but the grouped one
SLOW_S = 0.3  # a gradient slower than this is timed once


def gradients(layer: suite.Layer, form: str):
    """The compiled input gradient and kernel gradient of one form on one layer."""
    f = suite.method_fn(layer, form)
    dy = jax.jit(lambda y, w, g: jax.vjp(lambda y: f(y, w), y)[1](g)[0])
    dw = jax.jit(lambda y, w, g: jax.vjp(lambda w: f(y, w), w)[1](g)[0])
    return {"input": dy, "kernel": dw}


def measure(layer: suite.Layer, rounds: int) -> dict:
    """Medians (s) of every form's two gradients, interleaved; raises if a form's gradient is wrong."""
    args = tuple(jnp.asarray(a) for a in layer.arrays())
    fns = {(form, which): fn for form in FORMS for which, fn in gradients(layer, form).items()}
    reference = {which: np.asarray(fns["vjp", which](*args)) for which in ("input", "kernel")}
    for (form, which), fn in fns.items():
        got = np.asarray(fn(*args))
        scale = np.abs(reference[which]).max()
        err = np.abs(got - reference[which]).max() / scale
        if err > 1e-4:
            raise AssertionError(f"{layer.name}: {form}'s {which} gradient is off by {err:.1e}")
    times = {key: [] for key in fns}
    for r in range(rounds):
        for key, fn in fns.items():
            if r and statistics.median(times[key]) > SLOW_S:
                continue
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def mixed(layer: suite.Layer, forward: str, input_form: str, kernel_form: str):
    """The forward of one form with the input gradient of another and the kernel gradient of a third."""
    spec = suite.layer_spec(layer)
    forms = {name: _named_form(name, spec) for name in (forward, input_form, kernel_form)}

    @jax.custom_jvp
    def f(y, w):
        return forms[forward](y, w)

    @f.defjvp
    def _(primals, tangents):
        (y, w), (ty, tw) = primals, tangents
        d_in = jax.jvp(lambda y: forms[input_form](y, w), (y,), (ty,))[1]
        d_kernel = jax.jvp(lambda w: forms[kernel_form](y, w), (w,), (tw,))[1]
        return f(y, w), d_in + d_kernel

    return f


def fwd_bwd_table(layer: suite.Layer, fastest: dict, rounds: int) -> str:
    """One markdown row: fwd+bwd of auto, of its forward form alone, and of the fastest mix."""
    args = tuple(jnp.asarray(a) for a in layer.arrays())
    pick = suite.auto_pick(layer, "cpu")
    fns = {
        "auto": suite.method_fn(layer, "auto"),
        f"{pick} alone": suite.method_fn(layer, pick),
        f"{pick} + {fastest['input']} / {fastest['kernel']}": mixed(layer, pick, fastest["input"], fastest["kernel"]),
    }
    compiled = {name: jax.jit(suite.fwd_bwd(f)).lower(*args).compile() for name, f in fns.items()}
    cells = [f"{name}: {t * 1e3:.3g}" for name, t in suite.interleaved_medians(compiled, args, rounds).items()]
    return f"| {layer.name} | " + " | ".join(cells) + " |"


def main(argv=None) -> None:
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 7, argv)
    load = suite.Load()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, {rounds} interleaved rounds; median ms")
    print("| layer | gradient | " + " | ".join(FORMS) + " | fastest | auto takes |")
    print("|---|---|" + "---|" * (len(FORMS) + 2))
    fastest = {}
    for layer in layers:
        t = measure(layer, rounds)
        load.sample()
        for which in ("input", "kernel"):
            cells = [f"{t[form, which] * 1e3:.3g}" for form in FORMS]
            fastest[layer.name, which] = min(FORMS, key=lambda form: t[form, which])
            takes = suite.auto_pick(layer, "cpu", derivatives=which)
            row = f"| {layer.name} | {which} | " + " | ".join(cells) + f" | {fastest[layer.name, which]} | {takes} |"
            print(row, flush=True)
    print()
    print("fwd+bwd, median ms: `auto`; its forward form with its own gradients; that forward with each")
    print("gradient from the form fastest at it above (input / kernel)")
    print()
    print("| layer | auto | forward form alone | mixed |")
    print("|---|---|---|---|")
    for layer in layers:
        best = {which: fastest[layer.name, which] for which in ("input", "kernel")}
        print(fwd_bwd_table(layer, best, rounds), flush=True)
        load.sample()
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
