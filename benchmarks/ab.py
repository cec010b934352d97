"""`auto` of this checkout against `auto` of an earlier commit, in one interleaved run.

Run: PYTHONPATH=. .venv/bin/python benchmarks/ab.py REV [--only NAME] [--channels-last] [--compile | --memory]
     [--trace [--repeat N]] [--loss]
     [--rounds 21] [--quick | --generator | --stride-1 | --k4s2]

The package as it was at git revision `REV` is extracted (`git archive`) into a temporary
directory and imported under another name, next to this checkout's. For every suite layer (or
`--only` those whose name starts with NAME; `--generator`, the DCGAN generator's layers) both
compile the forward and fwd+bwd of `conv_transpose(method="auto")`, on channels-first arrays or,
with `--channels-last`, on the arrays the Flax layers hold. The script prints whether XLA's
compiled programs are the same (metadata and source locations aside: then any difference in time
is noise), checks the two results agree, and times all four programs in interleaved rounds:
medians and the ratios new / old, with the load average.

`--compile`: instead, the time from a cold cache (`jax.clear_caches()`) to a compiled fwd+bwd
(trace, lowering and XLA's compile, as `bench.py` counts it), new and old in each round's
shuffled order; medians and new / old.

With `--generator`, a last row: the generator's layers (with `--quick`, a tiny one's) as one model (ReLU between them, tanh at
the end, a loss: `suite.model_step`, as `bench.py` compiles it), its training step timed (with
`--compile`: its compile and first call), old and new.

`--trace`: instead, the part of that time spent in Python: tracing and lowering fwd+bwd to
StableHLO from a cold cache, new and old interleaved, medians and new / old; and whether the
programs XLA compiles from the two are the same (then the change cost nothing at run time).
`--repeat N`: the step holds the layer N times, on kernels `w, 2 w, ...`, the outputs summed (a
model that uses one shape of layer N times in one trace).

`--memory`: instead, XLA's temp buffers of each compiled fwd+bwd (`memory_analysis()`, from
shapes: nothing is timed), new and old.

`--loss`: fwd+bwd as a training step has it (`suite.in_a_loss`: the gradients of
`0.5 * sum((out - target) ** 2)`, the third array the target), whose cotangent depends on the
forward; by default the cotangent is an argument (`suite.fwd_bwd`), and XLA:CPU may then run the
backward beside the forward.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import operator
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
from channels_last import channels_last  # noqa: E402

import transconv_jax  # noqa: E402
from transconv_jax._spec import lax_layout  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_revision(rev: str, into: str):
    """The package `transconv_jax` as of git revision `rev`, imported as `transconv_jax_old`."""
    archive = subprocess.run(["git", "archive", rev, "transconv_jax"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    os.rename(os.path.join(into, "transconv_jax"), os.path.join(into, "transconv_jax_old"))
    sys.path.insert(0, into)
    return importlib.import_module("transconv_jax_old")


def program_text(compiled) -> str:
    """Compiled HLO without metadata and source locations, which differ between two copies of the code,
    and with every `%name` renamed by its first appearance: XLA numbers its instructions by the
    order in which they were created, which a change in tracing alone can move."""
    lines = compiled.as_text().splitlines()
    lines = [line for line in lines if not re.match(r"^(\d+ |FileNames|FunctionNames|FileLocations|StackFrames)", line)]
    text = re.sub(r",? metadata=\{[^}]*\}|, stack_frame_id=\d+", "", "\n".join(lines))
    names: dict[str, str] = {}
    return re.sub(r"%[\w.-]+", lambda m: names.setdefault(m.group(), f"%{len(names)}"), text)


def same_programs(new: str, old: str) -> str:
    """'same' where two `program_text`s are equal; 'same ops' where they hold the same instructions
    in another order (XLA's schedule: names and operands aside, the lines sorted); else 'differ'."""
    if new == old:
        return "same"
    ops = [sorted(re.sub(r"%\d+", "%", text).splitlines()) for text in (new, old)]
    return "same ops" if ops[0] == ops[1] else "differ"


def layer_arguments(layer: suite.Layer, last: bool) -> tuple[tuple, dict]:
    """The layer's `(y, w, g)` and the keywords of `conv_transpose` beyond its own: channels-last with `last`."""
    args = tuple(jnp.asarray(a) for a in layer.arrays())
    if not last:
        return args, {}
    return channels_last(layer, *args), {"dimension_numbers": lax_layout(layer.ndim, channels_last=True)}


def compare(layer: suite.Layer, packages: dict, last: bool, rounds: int, load: suite.Load, step=suite.fwd_bwd) -> str:
    """One markdown row: same programs?, medians (ms) and ratios new / old of forward and fwd+bwd."""
    args, options = layer_arguments(layer, last)
    fns, texts = {}, {}
    for tag, package in packages.items():
        f = lambda y, w, p=package: p.conv_transpose(y, w, **layer.kwargs, **options)  # noqa: E731
        for phase, fn in (("fwd", lambda y, w, g, f=f: f(y, w)), ("fwd+bwd", step(f))):
            fns[tag, phase] = jax.jit(fn).lower(*args).compile()
            texts[tag, phase] = program_text(fns[tag, phase])
    for phase in ("fwd", "fwd+bwd"):
        got, want = (jax.tree.leaves(fns[tag, phase](*args)) for tag in ("new", "old"))
        for a, b in zip(got, want, strict=True):
            err = float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())
            if err > 1e-4:
                raise AssertionError(f"{layer.name} {phase}: new and old differ by {err:.1e}")
    t = suite.interleaved_medians(fns, args, rounds, load)
    cells = []
    for phase in ("fwd", "fwd+bwd"):
        same = same_programs(texts["new", phase], texts["old", phase])
        new, old = t["new", phase] * 1e3, t["old", phase] * 1e3
        cells += [same, f"{old:.3g}", f"{new:.3g}", f"{new / old:.2f}x"]
    return f"| {layer.name} | " + " | ".join(cells) + " |"


def compare_compile(layer: suite.Layer, packages: dict, last: bool, rounds: int, load: suite.Load) -> str:
    """One markdown row: the median seconds to a compiled fwd+bwd from a cold cache, old and new, and new / old."""
    args, options = layer_arguments(layer, last)
    times = {tag: [] for tag in packages}
    for r in range(rounds):
        for tag in suite.in_turn(packages, r):
            f = lambda y, w, p=packages[tag]: p.conv_transpose(y, w, **layer.kwargs, **options)  # noqa: E731
            jax.clear_caches()
            start = time.perf_counter()
            jax.jit(suite.fwd_bwd(f)).lower(*args).compile()
            times[tag].append(time.perf_counter() - start)
        load.sample()
    old, new = (statistics.median(times[tag]) for tag in ("old", "new"))
    return f"| {layer.name} | {old:.3g} | {new:.3g} | {new / old:.2f}x |"


def _model_convs(packages: dict) -> dict:
    return {tag: lambda layer, p=p: lambda y, w: p.conv_transpose(y, w, **layer.kwargs) for tag, p in packages.items()}


def compare_model(packages: dict, layers, rounds: int, load: suite.Load) -> str:
    """One markdown row like `compare`'s: the training step of the generator built from `layers`
    (`suite.model_step`), whether the programs are the same, and its median ms old and new."""
    fns, texts = {}, {}
    for tag, conv in _model_convs(packages).items():
        step, args = suite.model_step(layers, conv)
        fns[tag] = jax.jit(step).lower(*args).compile()
        texts[tag] = program_text(fns[tag])
    t = suite.interleaved_medians(fns, args, rounds, load)
    old, new = t["old"] * 1e3, t["new"] * 1e3
    same = same_programs(texts["new"], texts["old"])
    return f"| the generator, a training step | | | | | {same} | {old:.3g} | {new:.3g} | {new / old:.2f}x |"


def compare_model_compile(packages: dict, layers, rounds: int) -> str:
    """One markdown row: compile and first call of the generator built from `layers`
    (`suite.model_compile`), old and new, and new / old."""
    result = suite.model_compile(layers, _model_convs(packages), rounds)
    old, new = (result[tag]["compile"] + result[tag]["first_call"] for tag in ("old", "new"))
    return f"| the generator, compile + first call | {old:.3g} | {new:.3g} | {new / old:.2f}x |"


def compare_trace(
    layer: suite.Layer, packages: dict, last: bool, rounds: int, load: suite.Load, repeat: int = 1
) -> str:
    """One markdown row: whether the compiled fwd+bwd programs are the same, and the median
    milliseconds to trace and lower fwd+bwd (of `repeat` layers) from a cold cache, old and new,
    and new / old."""
    args, options = layer_arguments(layer, last)
    times, texts = {tag: [] for tag in packages}, {}
    for r in range(rounds):
        for tag in suite.in_turn(packages, r):
            one = lambda y, w, p=packages[tag]: p.conv_transpose(y, w, **layer.kwargs, **options)  # noqa: E731
            f = lambda y, w, one=one: functools.reduce(operator.add, (one(y, w * i) for i in range(1, repeat + 1)))  # noqa: E731
            jax.clear_caches()
            start = time.perf_counter()
            lowered = jax.jit(suite.fwd_bwd(f)).lower(*args)
            times[tag].append(time.perf_counter() - start)
            if tag not in texts:
                texts[tag] = program_text(lowered.compile())
        load.sample()
    same = same_programs(texts["new"], texts["old"])
    old, new = (statistics.median(times[tag]) * 1e3 for tag in ("old", "new"))
    return f"| {layer.name} | {same} | {old:.3g} | {new:.3g} | {new / old:.2f}x |"


def compare_memory(layer: suite.Layer, packages: dict, last: bool, step=suite.fwd_bwd) -> str:
    """One markdown row: XLA's temp buffers (MiB) of the compiled fwd+bwd, old and new, and new / old."""
    args, options = layer_arguments(layer, last)
    temp = {}
    for tag, package in packages.items():
        f = lambda y, w, p=package: p.conv_transpose(y, w, **layer.kwargs, **options)  # noqa: E731
        compiled = jax.jit(step(f)).lower(*args).compile()
        temp[tag] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    ratio = f"{temp['new'] / temp['old']:.2f}x" if temp["old"] else "n/a"
    return f"| {layer.name} | {temp['old']:.3g} | {temp['new']:.3g} | {ratio} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare with, e.g. HEAD~1 or a commit")
    parser.add_argument("--channels-last", action="store_true", help="the Flax layers' layout")
    parser.add_argument("--compile", action="store_true", help="time the cold compile of fwd+bwd instead")
    parser.add_argument("--trace", action="store_true", help="time tracing and lowering fwd+bwd instead")
    parser.add_argument("--repeat", type=int, default=1, help="with --trace: the layer this many times in one step")
    parser.add_argument("--memory", action="store_true", help="XLA's temp buffers of fwd+bwd instead")
    parser.add_argument("--loss", action="store_true", help="fwd+bwd in a loss: the cotangent depends on the forward")
    args, rest = parser.parse_known_args(argv)
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 21, rest)
    model = suite.TINY_GENERATOR if "--quick" in rest else suite.GENERATOR  # with --generator: as one model
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"new": transconv_jax, "old": import_revision(args.rev, tmp)}
        load = suite.Load()
        layout = "channels-last" if args.channels_last else "channels-first"
        step = suite.in_a_loss if args.loss else suite.fwd_bwd
        if args.loss:
            layout += ", fwd+bwd in a loss (the cotangent out - target)"
        print(f"auto of this checkout (new) against {args.rev} (old), {layout}; jax {jax.__version__}, "
              f"{os.cpu_count()} cores, {rounds} interleaved rounds; median {'s' if args.compile else 'ms'}")  # fmt: skip
        print()
        if args.memory:
            print("| layer | fwd+bwd XLA temp old, MiB | new, MiB | new / old |")
            print("|---|---|---|---|")
            for layer in layers:
                print(compare_memory(layer, packages, args.channels_last, step), flush=True)
            return
        if args.trace:
            print(f"The layer {args.repeat} times in one step" if args.repeat > 1 else "One layer per step")
            print()
            print("| layer | fwd+bwd programs | trace + lower old, ms | new, ms | new / old |")
            print("|---|---|---|---|---|")
            for layer in layers:
                print(compare_trace(layer, packages, args.channels_last, rounds, load, args.repeat), flush=True)
            print()
            print(load.finish().describe())
            return
        if args.compile:
            print("| layer | fwd+bwd compile old, s | new, s | new / old |")
            print("|---|---|---|---|")
            for layer in layers:
                print(compare_compile(layer, packages, args.channels_last, rounds, load), flush=True)
            if "--generator" in rest and not args.channels_last:
                print(compare_model_compile(packages, model, rounds), flush=True)
            print()
            print(load.finish().describe())
            return
        print("| layer | fwd programs | fwd old | fwd new | new / old | fwd+bwd programs | fwd+bwd old | fwd+bwd new "
              "| new / old |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for layer in layers:
            print(compare(layer, packages, args.channels_last, rounds, load, step), flush=True)
        if "--generator" in rest and not args.channels_last:
            print(compare_model(packages, model, rounds, load), flush=True)
        print()
        print(load.finish().describe())


if __name__ == "__main__":
    main()
