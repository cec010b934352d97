"""Command line: `python -m transconv_jax demo` (the benchmarks live in `benchmarks/`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transconv_jax",
        description="transconv_jax: transposed convolution in JAX with PyTorch's numbers.",
        epilog="Benchmarks: `make bench` (benchmarks/bench.py).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="the tutorial's examples, each computed by every form (the default)")
    args = parser.parse_args(argv)
    del args  # one command so far
    from ._demo import main as demo

    return demo([])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
