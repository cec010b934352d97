"""Whole decoders in Flax NNX, trained as a Flax user trains them: `transconv_jax.nnx.ConvTranspose`
(`method="auto"`) against Flax's own `flax.nnx.ConvTranspose(transpose_kernel=True)`, channels-last.

Run: PYTHONPATH=. .venv/bin/python benchmarks/models.py [--only NAME] [--rounds 9] [--quick]

Each model is built twice from one list of layers, once with each transposed convolution (the
rest, `nnx.Conv` and activations, is the same); Flax's gets the same kernels (its
`transpose_kernel` layout is ours with the channel axes swapped) and 'SAME' / 'VALID' padding
means the same in both, so the two compute the same function. One training step's loss and
gradients, `jax.jit(jax.value_and_grad(loss))` of the split model (`nnx.split`), is checked first
(loss, the input's gradient and every kernel's gradient agree within 1e-4 of the largest
magnitude), then, per model and contender:

- **compile**: `lower` and `compile` of the step from a cold cache (`jax.clear_caches()`), the
  median of `COMPILE_REPEATS`, interleaved with the other contender's;
- **first call**: the first call of the compiled step (XLA:CPU's own first-call work), and
  compile + first call, what a user waits for before training starts;
- **step**: the median time of one step over interleaved rounds (`suite.interleaved_medians`).

The models (batch sizes for this 2-core CPU): a DCGAN generator (100 -> 64x64 RGB, k4), a U-Net
decoder (four k2 s2 up-convolutions, each followed by a 3x3 convolution), HiFi-GAN's upsampler
(1-D: k16 s8 twice, then k4 s2 twice, between 7-tap convolutions) and a 3-D decoder (two k3 s2).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

import transconv_jax.nnx as tnnx  # noqa: E402

COMPILE_REPEATS = 3
CONTENDERS = ("auto", "flax")


@dataclasses.dataclass(frozen=True)
class Up:
    """A transposed convolution `c_in -> c_out`, kernel `k`, stride `s`, Flax's 'SAME' or 'VALID'."""

    c_in: int
    c_out: int
    k: int
    s: int
    padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class Conv:
    """A stride-1 'SAME' `nnx.Conv`."""

    c_in: int
    c_out: int
    k: int


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    input_shape: tuple[int, ...]  # channels-last, batch first
    layers: tuple  # of Up and Conv; ReLU between layers, tanh at the end


MODELS = (
    Model("DCGAN generator", (16, 1, 1, 100),
          (Up(100, 512, 4, 1, "VALID"), Up(512, 256, 4, 2), Up(256, 128, 4, 2), Up(128, 64, 4, 2), Up(64, 3, 4, 2))),
    Model("U-Net decoder", (4, 16, 16, 256),
          (Up(256, 128, 2, 2), Conv(128, 128, 3), Up(128, 64, 2, 2), Conv(64, 64, 3),
           Up(64, 32, 2, 2), Conv(32, 32, 3), Up(32, 16, 2, 2), Conv(16, 1, 3))),
    Model("HiFi-GAN upsampler 1-D", (4, 64, 80),
          (Conv(80, 256, 7), Up(256, 128, 16, 8), Up(128, 64, 16, 8), Up(64, 32, 4, 2), Up(32, 16, 4, 2),
           Conv(16, 1, 7))),
    Model("3-D decoder", (2, 8, 8, 8, 128), (Up(128, 64, 3, 2), Up(64, 32, 3, 2), Conv(32, 1, 3))),
)  # fmt: skip
TINY_MODELS = (
    Model("tiny 2-D", (2, 4, 4, 8), (Up(8, 4, 4, 2), Conv(4, 4, 3), Up(4, 2, 2, 2))),
    Model("tiny 1-D", (2, 8, 4), (Up(4, 4, 4, 2), Conv(4, 1, 3))),
)


class Decoder(nnx.Module):
    def __init__(self, model: Model, contender: str, *, rngs: nnx.Rngs):
        nd = len(model.input_shape) - 2
        self.layers = nnx.List([_layer(layer, nd, contender, rngs) for layer in model.layers])

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = jnp.tanh(x) if i == len(self.layers) - 1 else nnx.relu(x)
        return x


def _layer(layer, nd: int, contender: str, rngs: nnx.Rngs):
    if isinstance(layer, Conv):
        return nnx.Conv(layer.c_in, layer.c_out, (layer.k,) * nd, padding="SAME", rngs=rngs)
    args = (layer.c_in, layer.c_out, (layer.k,) * nd, (layer.s,) * nd)
    if contender == "auto":
        return tnnx.ConvTranspose(*args, padding=layer.padding, rngs=rngs)
    return nnx.ConvTranspose(*args, padding=layer.padding, transpose_kernel=True, rngs=rngs)


def build(model: Model) -> dict:
    """Both decoders, Flax's with our kernels and biases, as `(step, state, x)`: the jitted loss and gradients."""
    decoders = {name: Decoder(model, name, rngs=nnx.Rngs(0)) for name in CONTENDERS}
    for ours, theirs in zip(decoders["auto"].layers, decoders["flax"].layers, strict=True):
        if isinstance(theirs, nnx.ConvTranspose):
            theirs.kernel[...] = jnp.swapaxes(ours.kernel[...], -1, -2)
            theirs.bias[...] = ours.bias[...]
        else:
            theirs.kernel[...], theirs.bias[...] = ours.kernel[...], ours.bias[...]
    x = jnp.asarray(np.random.default_rng(0).standard_normal(model.input_shape, dtype=np.float32))
    built = {}
    for name, decoder in decoders.items():
        graphdef, state = nnx.split(decoder)

        def loss(state, x, graphdef=graphdef):
            return jnp.mean(nnx.merge(graphdef, state)(x) ** 2)

        built[name] = (jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), state, x)
    return built


def check(model: Model, built: dict) -> float:
    """The largest difference of the two steps' loss, input gradient and kernel gradients, relative
    to the largest magnitude (Flax's transposed-convolution kernels read with their channel axes swapped)."""
    (la, (sa, xa)), (lf, (sf, xf)) = (step(state, x) for step, state, x in built.values())
    pairs = [(la, lf), (xa, xf)]
    for (path, ours), (_, theirs) in zip(nnx.to_flat_state(sa), nnx.to_flat_state(sf), strict=True):
        a, b = np.asarray(ours[...]), np.asarray(theirs[...])
        swap = path[-1] == "kernel" and isinstance(model.layers[path[1]], Up)
        pairs.append((a, np.swapaxes(b, -1, -2) if swap else b))
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1e-30, np.abs(b).max())) for a, b in pairs)


def measure(built: dict, rounds: int) -> dict:
    """Per contender: median cold compile (s), first call (s), median step (s)."""
    compile_s, first_s, compiled = {n: [] for n in built}, {}, {}
    for r in range(COMPILE_REPEATS):
        for name, (step, state, x) in suite.in_turn(built.items(), r):
            jax.clear_caches()
            start = time.perf_counter()
            compiled[name] = step.lower(state, x).compile()
            compile_s[name].append(time.perf_counter() - start)
            if name not in first_s:
                start = time.perf_counter()
                jax.block_until_ready(compiled[name](state, x))
                first_s[name] = time.perf_counter() - start
    fns = {name: functools.partial(compiled[name], state, x) for name, (_, state, x) in built.items()}
    steps = suite.interleaved_medians(fns, (), rounds)
    return {name: (statistics.median(compile_s[name]), first_s[name], steps[name]) for name in built}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--only", help="models whose name starts with this")
    parser.add_argument("--quick", action="store_true", help="two tiny models, 2 rounds (a smoke test)")
    args = parser.parse_args(argv)
    models = [m for m in (TINY_MODELS if args.quick else MODELS) if not args.only or m.name.startswith(args.only)]
    rounds = 2 if args.quick else args.rounds
    load = suite.Load()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores; compile: median of {COMPILE_REPEATS} cold, s; "
          f"first call, s; step: median of {rounds} interleaved rounds, ms")  # fmt: skip
    print()
    print("| model | check | compile auto | compile flax | auto / flax | first call auto | first call flax | "
          "compile + first call, auto / flax | step auto | step flax | auto / flax |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        built = build(model)
        error = check(model, built)
        if error > 1e-4:
            raise AssertionError(f"{model.name}: auto and flax differ by {error:.1e}")
        r = measure(built, rounds)
        (ca, fa, sa), (cf, ff, sf) = r["auto"], r["flax"]
        cells = [f"{error:.0e}", f"{ca:.2f}", f"{cf:.2f}", f"{ca / cf:.2f}x", f"{fa:.3f}", f"{ff:.3f}",
                 f"{(ca + fa) / (cf + ff):.2f}x", f"{sa * 1e3:.3g}", f"{sf * 1e3:.3g}", f"{sa / sf:.2f}x"]  # fmt: skip
        print(f"| {model.name} | " + " | ".join(cells) + " |", flush=True)
        load.sample()
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
