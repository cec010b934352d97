"""`auto`'s fwd+bwd with XLA:CPU's default scheduler against ops run one after another.

Run: PYTHONPATH=. .venv/bin/python benchmarks/scheduler.py [--only NAME] [--rounds 15] [--pairs 3] [--quick]

XLA:CPU runs the independent ops of a program at the same time (a layer's backward does not wait
for its forward; its two gradients do not wait for each other). `XLA_FLAGS` can turn that off
(`--xla_cpu_enable_concurrency_optimized_scheduler=false`, `benchmarks/movement.py` uses it), but
only for a whole process. So for every layer of the suite this starts child processes in turn,
`--pairs` of each kind alternating, each compiling `auto`'s fwd+bwd (value and both gradients, a
real upstream gradient passed as an argument) and timing it over `--rounds` (median); the table
gives the median over the children of each kind, and the ratio sequential / default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

SEQUENTIAL = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def child(name: str, rounds: int) -> None:
    """In a child process: print the median seconds of `auto`'s compiled fwd+bwd on layer `name`."""
    import jax
    import jax.numpy as jnp

    (layer,) = [la for la in (*suite.LAYERS, *suite.TINY) if la.name == name]
    args = tuple(jnp.asarray(a) for a in layer.arrays())
    compiled = jax.jit(suite.fwd_bwd(suite.method_fn(layer, "auto"))).lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # warm-up
    print(suite.interleaved_medians({"auto": compiled}, args, rounds)["auto"])


def timed(layer: suite.Layer, rounds: int, flags: str) -> float:
    env = {**os.environ, "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), flags]).strip()}
    cmd = [sys.executable, __file__, "--child", layer.name, str(rounds)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600)
    return float(run.stdout.split()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]))
        return
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pairs", type=int, default=3)
    known, argv = parser.parse_known_args(argv)
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 15, argv)
    pairs = 1 if rounds == 2 else known.pairs  # --quick: one child of each kind
    load = suite.Load()
    print(f"{os.cpu_count()} cores; per layer {pairs} child processes of each kind, alternating, each the median of "
          f"{rounds} calls; median over the children, ms")  # fmt: skip
    print()
    print("| layer | default | one after another | one after another / default |")
    print("|---|---|---|---|")
    for layer in layers:
        times = {"default": [], "sequential": []}
        for _ in range(pairs):
            times["default"].append(timed(layer, rounds, ""))
            times["sequential"].append(timed(layer, rounds, SEQUENTIAL))
            load.sample()
        default, sequential = (1e3 * statistics.median(t) for t in times.values())
        print(f"| {layer.name} | {default:.3g} | {sequential:.3g} | {sequential / default:.2f}x |", flush=True)
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
