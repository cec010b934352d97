"""Benchmark suite (not implemented yet)."""


def main(argv: list[str]) -> int:
    raise NotImplementedError
