"""A kernel gradient's product in each operand layout: the rows it contracts minor or major in each operand.

Run: PYTHONPATH=. .venv/bin/python benchmarks/gemm_layouts.py [--rounds 21] [--quick]

A kernel gradient contracts the rows (batch times spatial positions) of two operands, `a` with
`m` columns and `b` with `n`: `a^T b`, an `(m, n)` result. Laid out as the im2col forms build
them, the rows are the operands' major axis (channels-last columns, `(rows, m)`); the scatter
form's channels-first columns have them minor (`(m, rows)`). This script times `jax.lax.dot_general`
on XLA:CPU with each operand in either layout (both given as arguments, so XLA keeps their
layout), interleaved rounds, medians, for the shapes of two suite layers' kernel gradients:

- "stride 1": the scatter form's, the cotangent's columns (576 = 64 channels x 9 taps) against
  the input (128 channels) over 8 x 32 x 32 rows;
- "DCGAN 32x32": subpixel's, the input's windows (512 = 4 taps x 128 channels) against the
  cotangent's phases (256 = 4 phases x 64 channels) over 8 x 33 x 33 rows.

Columns: "rows minor" (`(m, rows)` and `(n, rows)`), "a minor" (`(m, rows)`, `(rows, n)`),
"b minor" (`(rows, m)`, `(n, rows)`), "rows major" (`(rows, m)`, `(rows, n)`); GFLOP/s beside each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

SHAPES = {"stride 1": (8 * 32 * 32, 576, 128), "DCGAN 32x32": (8 * 33 * 33, 512, 256)}
TINY = {"tiny": (256, 16, 8)}
LAYOUTS = {  # name: (is a's row axis minor, is b's row axis minor)
    "rows minor": (True, True),
    "a minor": (True, False),
    "b minor": (False, True),
    "rows major": (False, False),
}


def product(a_minor: bool, b_minor: bool):
    """`a^T b` contracting the rows, which are axis 1 of an operand laid out rows-minor, else axis 0."""
    dims = (((1 if a_minor else 0,), (1 if b_minor else 0,)), ((), ()))
    return jax.jit(lambda a, b: lax.dot_general(a, b, dims))


def row(name: str, rows: int, m: int, n: int, rounds: int, load: suite.Load) -> str:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((rows, m), np.float32), rng.standard_normal((rows, n), np.float32)
    args, fns = {}, {}
    for layout, (a_minor, b_minor) in LAYOUTS.items():
        args[layout] = (a.T.copy() if a_minor else a, b.T.copy() if b_minor else b)
        fns[layout] = product(a_minor, b_minor)
    want = a.T.astype(np.float64) @ b
    for layout, fn in fns.items():
        err = float(np.abs(np.asarray(fn(*args[layout])) - want).max() / np.abs(want).max())
        if err > 1e-4:
            raise AssertionError(f"{name} {layout}: off by {err:.1e}")
    times = {layout: [] for layout in fns}
    for r in range(rounds):
        for layout in suite.in_turn(fns, r):
            start = time.perf_counter()
            jax.block_until_ready(fns[layout](*args[layout]))
            times[layout].append(time.perf_counter() - start)
        load.sample()
    cells = []
    for layout in fns:
        t = float(np.median(times[layout]))
        cells.append(f"{t * 1e3:.3g} ({2 * rows * m * n / t / 1e9:.0f})")
    return f"| {name} | {rows} x {m} x {n} | " + " | ".join(cells) + " |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--quick", action="store_true", help="a tiny shape, 2 rounds (a smoke test)")
    args = parser.parse_args(argv)
    shapes, rounds = (TINY, 2) if args.quick else (SHAPES, args.rounds)
    load = suite.Load()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, {rounds} interleaved rounds; median ms (GFLOP/s)")
    print()
    print("| layer | rows x m x n | " + " | ".join(LAYOUTS) + " |")
    print("|---|---|" + "---|" * len(LAYOUTS))
    for name, (rows, m, n) in shapes.items():
        print(row(name, rows, m, n, rounds, load), flush=True)
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
