"""Command line: `python -m transconv_jax demo` and `python -m transconv_jax bench`."""

import sys


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("demo", [])
    if command == "demo":
        from ._demo import main as run
    elif command == "bench":
        from ._bench import main as run
    else:
        print(f"unknown command {command!r}; use 'demo' or 'bench'", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
