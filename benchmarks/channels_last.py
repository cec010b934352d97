"""Channels-last against channels-first: `auto` on the arrays Flax layers hold.

Run: PYTHONPATH=. .venv/bin/python benchmarks/channels_last.py [--rounds 9] [--only NAME] [--quick]

(`--quick`: the tiny layers and a tiny k2 s2, a smoke test in `make test`.)

The bench (`bench.py`) times every layer channels-first, as PyTorch holds it. Flax's layers, ours
included (`transconv_jax.nnx.ConvTranspose`, `transconv_jax.linen.ConvTranspose`), hold
channels-last arrays and call `conv_transpose` with `dimension_numbers=("NHWC", "HWIO", "NHWC")`
(per rank). For every layer of the suite this times, in interleaved rounds (medians), the forward
and fwd+bwd (value and both gradients, a real upstream gradient passed as an argument) of:

- `auto` on channels-first arrays (the bench's `auto`);
- `auto` on the same arrays channels-last, with the dimension numbers the Flax layers pass;
- `jax.lax.conv_transpose` on the channels-last arrays (what Flax's own `ConvTranspose` runs;
  not for grouped layers).

Each channels-last result is checked against `auto`'s channels-first one first.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

import transconv_jax as tc  # noqa: E402
from transconv_jax._spec import lax_layout  # noqa: E402


def channels_last(layer: suite.Layer, y, w, g) -> tuple:
    """The layer's arrays as the Flax layers hold them: `(N, *spatial, C)` and a `(*kernel, I, O)` kernel."""
    nd = layer.ndim
    to_last = (0, *range(2, 2 + nd), 1)
    return y.transpose(to_last), w.transpose((*range(2, 2 + nd), 0, 1)), g.transpose(to_last)


def contenders(layer: suite.Layer) -> dict:
    """name -> (function of (y, w), channels_last)."""
    dn = lax_layout(layer.ndim, channels_last=True)
    kw = layer.kwargs
    found = {
        "auto NC*": (lambda y, w: tc.conv_transpose(y, w, **kw), False),
        "auto N*C": (lambda y, w: tc.conv_transpose(y, w, **kw, dimension_numbers=dn), True),
    }
    if layer.groups == 1:
        spec = suite.layer_spec(layer)
        pads = [(layer.dilation * (k - 1) - lo, layer.dilation * (k - 1) - hi) for k, (lo, hi) in
                zip((layer.kernel,) * layer.ndim, spec.padding)]  # fmt: skip
        lax_dn = (dn[0], dn[1][:-2] + "OI", dn[2])  # transpose_kernel=True swaps the kernel's I and O
        found["jax.lax N*C"] = (
            lambda y, w: jax.lax.conv_transpose(y, w, spec.stride, pads, spec.dilation, lax_dn, transpose_kernel=True),
            True,
        )
    return found


def measure(layer: suite.Layer, rounds: int, load: suite.Load) -> tuple[dict, dict]:
    """Median seconds of each contender's forward and fwd+bwd, and the seconds of its fwd+bwd's trace,
    lowering and compile from a cold cache (one each); raises if a channels-last result is off."""
    first = tuple(jnp.asarray(a) for a in layer.arrays())
    last = channels_last(layer, *first)
    fns, compile_s = {}, {}
    for name, (f, is_last) in contenders(layer).items():
        args = last if is_last else first
        fwd = jax.jit(lambda y, w, g, f=f: f(y, w)).lower(*args).compile()
        fns[name, "fwd"] = (fwd, args)
        jax.clear_caches()
        start = time.perf_counter()
        fns[name, "fwd_bwd"] = (jax.jit(suite.fwd_bwd(f)).lower(*args).compile(), args)
        compile_s[name] = time.perf_counter() - start
    nd = layer.ndim
    reference = [np.asarray(a) for a in fns["auto NC*", "fwd_bwd"][0](*first)]
    for name, (_, is_last) in contenders(layer).items():
        if not is_last:
            continue
        out, dy, dw = (np.asarray(a) for a in fns[name, "fwd_bwd"][0](*last))
        back = (out.transpose(0, nd + 1, *range(1, nd + 1)), dy.transpose(0, nd + 1, *range(1, nd + 1)),
                dw.transpose(nd, nd + 1, *range(nd)))  # fmt: skip
        err = max(float(np.abs(a - r).max() / np.abs(r).max()) for a, r in zip(back, reference, strict=True))
        if err > 1e-4:
            raise AssertionError(f"{layer.name}: {name} is off by {err:.1e}")
    times = suite.interleaved_medians({k: (lambda *a, f=f, args=args: f(*args)) for k, (f, args) in fns.items()},
                                      (), rounds, load)  # fmt: skip
    return times, compile_s


TINY_K2 = suite.Layer("tiny 2-D k2 s2", 2, 8, 4, (8, 8), 2, 2)  # `--quick`: the scatter form's channels-last blocks


def main(argv=None) -> None:
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 9, argv)
    if layers and layers[0] in suite.TINY:
        layers = [*layers, TINY_K2]
    load = suite.Load()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, {rounds} interleaved rounds; median ms "
          "(N*C / NC*: channels-last over channels-first); compile: fwd+bwd from a cold cache, one each, s")  # fmt: skip
    print()
    print("| layer | fwd NC* | fwd N*C | N*C / NC* | fwd+bwd NC* | fwd+bwd N*C | N*C / NC* | jax.lax N*C fwd+bwd "
          "| compile NC* | compile N*C | compile jax.lax N*C |")  # fmt: skip
    print("|---" * 11 + "|")
    for layer in layers:
        t, compile_s = measure(layer, rounds, load)
        ms = {k: v * 1e3 for k, v in t.items()}
        lax = "jax.lax N*C" in compile_s
        cells = []
        for phase in ("fwd", "fwd_bwd"):
            a, b = ms["auto NC*", phase], ms["auto N*C", phase]
            cells += [f"{a:.3g}", f"{b:.3g}", f"{b / a:.2f}x"]
        cells.append(f"{ms['jax.lax N*C', 'fwd_bwd']:.3g}" if lax else "n/a")
        cells += [f"{compile_s[n]:.2f}" if n in compile_s else "n/a" for n in ("auto NC*", "auto N*C", "jax.lax N*C")]
        print(f"| {layer.name} | " + " | ".join(cells) + " |", flush=True)
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
