"""`auto`'s fwd+bwd under XLA:CPU's defaults against one process-wide setting, in child processes.

Run: PYTHONPATH=. .venv/bin/python benchmarks/scheduler.py [--heap | --eigen | --older-emitter] [--only NAME] [--rounds 15] [--pairs 3] [--quick]
     [--stride-1 | --k4s2 | --generator]

Default: ops run one after another. XLA:CPU runs the independent ops of a program at the same time
(a layer's backward does not wait for its forward; its two gradients do not wait for each
other). `XLA_FLAGS` can turn that off (`--xla_cpu_enable_concurrency_optimized_scheduler=false`,
`benchmarks/movement.py` uses it), but only for a whole process.

`--heap`: glibc's malloc serving large blocks from its heap (`MALLOC_MMAP_THRESHOLD_` and
`MALLOC_TRIM_THRESHOLD_` set to 1 GiB and 4 GiB). XLA:CPU allocates a program's temp buffers on
every call; past glibc's mmap threshold (128 KiB, raised as blocks are freed up to 32 MiB) each
such block is a fresh `mmap`, whose pages the kernel zeroes and maps on first touch, call after
call. PyTorch keeps its own cache of blocks. Each child then times PyTorch's fwd+bwd too.

`--eigen`: XLA:CPU's own (Eigen) convolutions instead of YNNPACK's
(`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`). By default jax 0.10's XLA:CPU
hands every 2-D float32 convolution with more than 16 channels, no input dilation and an output
no larger than its input to YNNPACK (`ynn_fusion`; dots too, which this keeps). Each child then
times PyTorch's fwd+bwd too, and counts the convolutions YNNPACK runs in `auto`'s compiled program.

`--older-emitter`: XLA:CPU's older emitter for its loop fusions (`--xla_cpu_use_fusion_emitters=false`;
`tests/conftest.py` sets it for the suite, whose compile it shortens). Each child then times
PyTorch's fwd+bwd too.

For every layer this starts child processes in turn, `--pairs` of each kind alternating, each
compiling `auto`'s fwd+bwd (value and both gradients, a real upstream gradient passed as an
argument) and timing it over `--rounds` (median); the table gives the median over the children of
each kind, and the ratio setting / default.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

SEQUENTIAL = {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=false"}
HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
EIGEN = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}
OLDER_EMITTER = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}
ALL_LAYERS = (*suite.LAYERS, *suite.TINY, *suite.STRIDE_1, *suite.K4S2, *suite.GENERATOR)


def child(name: str, rounds: int, with_torch: bool) -> None:
    """In a child process: print the median seconds of `auto`'s compiled fwd+bwd on layer `name`,
    its minor page faults per call and the convolutions YNNPACK runs in it, and with `with_torch`
    PyTorch's median seconds after it."""
    (layer,) = [la for la in ALL_LAYERS if la.name == name]
    c = suite.build(layer, "auto")
    c.sync(c.fwd_bwd(*c.args))  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(suite.interleaved_medians({"auto": c.fwd_bwd}, c.args, rounds)["auto"])
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / rounds)  # minor page faults per call
    print(suite.ynn_convolutions(c.fwd_bwd.as_text()))
    if with_torch:
        t = suite.build(layer, "torch")
        fn = lambda *args: t.sync(t.fwd_bwd(*args))  # noqa: E731
        fn(*t.args)
        print(suite.interleaved_medians({"torch": fn}, t.args, rounds)["torch"])


def timed(layer: suite.Layer, rounds: int, setting: dict, with_torch: bool) -> list[float]:
    """What the child prints: `auto`'s median (s), its minor page faults per call and YNNPACK's
    convolutions in it, and PyTorch's median (s) with `with_torch`."""
    env = dict(os.environ)
    for key, value in setting.items():
        env[key] = " ".join([env.get(key, ""), value]).strip() if key == "XLA_FLAGS" else value
    cmd = [sys.executable, __file__, "--child", layer.name, str(rounds), str(int(with_torch))]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600)
    return [float(x) for x in run.stdout.split()[-(4 if with_torch else 3) :]]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]), bool(int(argv[3])))
        return
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--heap", action="store_true")
    parser.add_argument("--eigen", action="store_true")
    parser.add_argument("--older-emitter", action="store_true")
    known, argv = parser.parse_known_args(argv)
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 15, argv)
    pairs = 1 if rounds == 2 else known.pairs  # --quick: one child of each kind
    options = {"heap": (HEAP, "heap"), "eigen": (EIGEN, "Eigen"), "older_emitter": (OLDER_EMITTER, "older emitter")}
    chosen = [value for option, value in options.items() if getattr(known, option)]
    setting, name = chosen[0] if chosen else (SEQUENTIAL, "one after another")
    with_torch = bool(chosen)  # every setting but the sequential scheduler times PyTorch too
    load = suite.Load()
    print(f"{os.cpu_count()} cores; per layer {pairs} child processes of each kind, alternating, each the median of "
          f"{rounds} calls; median over the children, ms")  # fmt: skip
    print()
    counted = "page faults per call | with the heap" if known.heap else f"YNNPACK convolutions | {name}"
    torch_cells = f" | {counted} | torch | torch, {name} | auto / torch | auto, {name} / torch, {name}"
    print(f"| layer | default | {name} | {name} / default{torch_cells if with_torch else ''} |")
    print("|---|---|---|---|" + "---|" * (6 if with_torch else 0))
    for layer in layers:
        times = {"default": [], "setting": []}
        for _ in range(pairs):
            times["default"].append(timed(layer, rounds, {}, with_torch))
            times["setting"].append(timed(layer, rounds, setting, with_torch))
            load.sample()
        (default, faults, ynn, *torch_default), (other, other_faults, other_ynn, *torch_other) = (
            [statistics.median(column) for column in zip(*t, strict=True)] for t in times.values()
        )
        default, other = 1e3 * default, 1e3 * other
        cells = [f"{default:.3g}", f"{other:.3g}", f"{other / default:.2f}x"]
        if with_torch:
            td, to = (1e3 * t[0] for t in (torch_default, torch_other))
            cells += [f"{faults:.0f}", f"{other_faults:.0f}"] if known.heap else [f"{ynn:.0f}", f"{other_ynn:.0f}"]
            cells += [f"{td:.3g}", f"{to:.3g}", f"{default / td:.2f}x", f"{other / to:.2f}x"]
        print(f"| {layer.name} | " + " | ".join(cells) + " |", flush=True)
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
