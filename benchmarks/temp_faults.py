"""Minor page faults per call of an XLA:CPU program, against the size of its temp buffers.

Run: PYTHONPATH=. .venv/bin/python benchmarks/temp_faults.py [--mib 8 16 24 31 33 40 48] [--calls 20] [--quick]

XLA:CPU gathers a program's temp buffers into one allocation ("preallocated-temp" in its buffer
assignment) and allocates it on every call. glibc's malloc maps a block past its mmap threshold
afresh (`mmap`), and the kernel zeroes and maps each of its pages on first touch: one minor page
fault per 4 KiB written. The threshold starts at 128 KiB and rises to the size of each mapped
block freed, but never past 32 MiB (glibc's `DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit); below it,
a block freed by the last call serves the next from the heap, with no new pages.

For every size this starts a child process (a fresh heap each), compiles a program whose temp
buffers are two arrays of half that size (a chain of elementwise ops XLA does not fuse away), and
counts the minor page faults (`getrusage`) over `--calls` calls after three warm-up calls. The
table gives XLA's temp size (`memory_analysis()`), the faults per call and the pages of 4 KiB in
the temp buffers.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

CHILD = "--child"


def child(mib: float, calls: int) -> None:
    """In a child process: print XLA's temp MiB and the minor page faults per call."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def f(x):
        a = jnp.sin(x) * 2.0
        b = jnp.cos(a)[::-1] + a  # reversed: `a` must be whole before `b` starts, so both are live
        return jnp.sum(b * a).reshape(1)

    x = jnp.ones((int(mib * 2**20) // 8,), jnp.float32)  # two temps of mib / 2 each
    compiled = f.lower(x).compile()
    for _ in range(3):
        compiled(x).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        compiled(x).block_until_ready()
    per_call = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls
    print(compiled.memory_analysis().temp_size_in_bytes / 2**20, per_call)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, nargs="+", default=[8, 16, 24, 31, 33, 40, 48])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="two sizes either side of 32 MiB, 3 calls")
    args = parser.parse_args(argv)
    sizes, calls = ([16, 40], 3) if args.quick else (args.mib, args.calls)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; each size in a fresh process, {calls} calls after 3 warm-up calls\n")
    print("| temp buffers (XLA), MiB | minor page faults per call | their pages of 4 KiB |")
    print("|---|---|---|")
    for mib in sizes:
        cmd = [sys.executable, __file__, CHILD, str(mib), str(calls)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        temp, faults = float(out[-2]), float(out[-1])
        print(f"| {temp:.1f} | {faults:.0f} | {temp * 256:.0f} |")
    print(f"\n1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after (page faults do not depend on it)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(float(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
