"""`python benchmarks/bench.py`: real decoder layers on CPU, every method against PyTorch, jax.lax and Flax.

For each layer and contender: a check of the value and both gradients against PyTorch in float64
(a contender that disagrees is reported and not timed); the forward and the forward+backward (a
real upstream gradient passed in as an argument), interleaved over rounds, as medians; ratios to
PyTorch and `auto` / `jax.lax`; GFLOP/s of useful work (`2 N prod(in) C_in C_out/g prod(k)` per
pass, three passes for forward+backward) against the machine's float32 matmul rate measured in the
same run; compile time of each contender, fresh (`jax.clear_caches()` first; `auto` and `jax.lax`
the median of three); compile and first
call of a DCGAN generator's forward+backward; peak memory of one large layer per contender, each
in a fresh subprocess. The 1-min load average before, during and after says whether the machine
was quiet (`suite.QUIET_BEFORE`, `suite.QUIET_DURING`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import suite
from suite import GENERATOR, LAYERS, METHODS, TINY, TINY_GENERATOR, Layer, Load, geomean

MEMORY_LAYER = Layer("memory: 256->512", 4, 64, 32, (256, 256), 4, 2, 1)
PEERS = ("torch", "jax.lax", "flax")
FLAG = 1.05  # auto / jax.lax above this is flagged (issue 14: never slower than jax.lax)
COMPILE_FLAG = 1.5  # auto's compile time / jax.lax's above this is flagged
COMPILE_REPEATS = 5  # cold compiles of auto and jax.lax (fwd+bwd, and the generator): their median


# ------------------------------------------------------------------------------ the suite


def run_layer(layer: Layer, rounds: int, load: Load) -> dict:
    """Build, check and time every contender of one layer."""
    ref = suite.reference(layer, jnp.float32)
    live, skipped, errors = {}, {}, {}
    for name in (*METHODS, *PEERS):
        jax.clear_caches()  # each contender's compile time from a cold start
        try:
            c = suite.build(layer, name)
        except NotImplementedError:
            continue
        except ValueError as e:
            skipped[name] = "n/a (memory guard)" if name == "matmul" else f"n/a ({str(e)[:40]})"
            continue
        errors[name] = suite.check(c, ref)
        if errors[name] > suite.tolerance(jnp.float32):
            skipped[name] = f"WRONG (error {errors[name]:.1e})"
        else:
            live[name] = c
    times = suite.time_contenders(live, rounds, load)
    for r in range(COMPILE_REPEATS - 1):  # compile is noisy: auto's and jax.lax's again, interleaved
        for name in suite.in_turn(("auto", "jax.lax"), r):
            if name in live:
                jax.clear_caches()
                live[name].compile_samples.append(suite.build(layer, name).compile_s["fwd_bwd"])
    for c in live.values():
        if c.compile_s:
            c.compile_s["fwd_bwd"] = statistics.median([c.compile_s["fwd_bwd"], *c.compile_samples])
    compile_s = {k: c.compile_s for k, c in live.items() if c.compile_s}
    kernels = {k: c.kernels for k, c in live.items() if c.kernels is not None}
    return {"layer": layer, "times": times, "compile": compile_s, "kernels": kernels, "skipped": skipped,
            "errors": errors, "auto": suite.auto_pick(layer, "cpu")}  # fmt: skip


def sgemm_rate(n: int = 2048, rounds: int = 7) -> float:
    """GFLOP/s of a float32 `n x n` matmul in jax on this machine."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, a))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(f(a, a))
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def generator_compile(layers=GENERATOR) -> dict:
    """Compile and first call of a DCGAN generator's loss and gradients, `auto` against jax.lax
    (`suite.model_compile`)."""
    convs = {"auto": lambda layer: suite.method_fn(layer, "auto"), "jax.lax": suite.jax_lax_fn}
    return {"layers": layers, **suite.model_compile(layers, convs, COMPILE_REPEATS)}


def run_suite(layers, rounds: int, generator) -> dict:
    """Time every layer; then the generator's compile time; the load average throughout."""
    load, sgemm, results = Load(), [sgemm_rate()], {}
    for layer in layers:
        print(f"bench: {layer.name} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        results[layer.name] = run_layer(layer, rounds, load)
    sgemm.append(sgemm_rate())
    gen = generator_compile(generator) if generator else None
    load.sample()  # the generator's compile is part of the run (and all of it with `--only` matching no layer)
    return {"results": results, "sgemm": max(sgemm), "rounds": rounds, "load": load.finish(), "generator": gen}


# ------------------------------------------------------------------------------ peak memory


def peak_memory(name: str, layer: Layer = MEMORY_LAYER) -> dict:
    """Forward+backward of `layer` by one contender in this process: growth of the peak resident
    set (VmHWM, reset first) over the resident set once inputs exist and it is compiled, and
    for JAX XLA's own temp-buffer size."""
    c = suite.build(layer, name)
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    base = _status_bytes("VmRSS")
    c.sync(c.fwd_bwd(*c.args))
    info = {"rss_growth": _status_bytes("VmHWM") - base}
    if "temp" in c.memory:
        info["xla_temp"] = c.memory["temp"]
    return info


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def memory_table(names) -> dict[str, dict | str]:
    """`peak_memory` of each contender, each in a fresh subprocess."""
    results = {}
    for name in names:
        run = subprocess.run(
            [sys.executable, __file__, "--memory-of", name], capture_output=True, text=True, timeout=600
        )
        lines = run.stdout.strip().splitlines()
        results[name] = json.loads(lines[-1]) if run.returncode == 0 and lines else f"failed: {run.stderr[-120:]!r}"
    return results


# ------------------------------------------------------------------------------ report


def markdown(suite_: dict, memory: dict | None, argv: list[str]) -> str:
    """The whole report: machine and load, per-layer tables, auto / jax.lax, geomeans, compile, memory."""
    names = _columns(suite_)
    lines = [_machine_line(suite_, argv), "", suite_["load"].describe(), "", *_check_lines(suite_), ""]
    for phase, title in (("fwd", "Forward"), ("fwd_bwd", "Forward + backward")):
        lines += [f"**{title}**: median ms (ratio to PyTorch); `auto` = the method it picks.", ""]
        lines += ["| layer | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [_row(row, names, phase) for row in suite_["results"].values()] + [""]
    lines += _against_lax(suite_) + [""] + _summary(suite_) + [""] + _throughput(suite_) + [""]
    lines += _compile(suite_, names)
    if suite_["generator"]:
        lines += [""] + _generator_lines(suite_["generator"])
    if memory:
        lines += [""] + _memory_lines(memory)
    return "\n".join(lines) + "\n"


def _machine_line(suite_: dict, argv: list[str]) -> str:
    import torch

    flags = os.environ.get("XLA_FLAGS")
    threads = f"XLA_FLAGS='{flags}'" if flags else "default threads"
    malloc = " ".join(f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("MALLOC_"))
    malloc = f"; glibc malloc: {malloc}" if malloc else ""  # it moves XLA:CPU's times (BENCHMARKS.md, "Page faults")
    return (f"Command: `python benchmarks/bench.py {' '.join(argv)}`. Machine: {_cpu_model()}, {os.cpu_count()} cores, "
            f"backend {jax.default_backend()}{malloc}; jax {jax.__version__} ({threads}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {suite_['rounds']} interleaved rounds; float32 matmul (jax, "
            f"2048^3) {suite_['sgemm']:.0f} GFLOP/s.")  # fmt: skip


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def _check_lines(suite_: dict) -> list[str]:
    worst: dict[str, float] = {}
    for row in suite_["results"].values():
        for k, e in row["errors"].items():
            worst[k] = max(worst.get(k, 0.0), e)
    cells = ", ".join(f"{k} {e:.1e}" for k, e in worst.items())
    return [f"Values checked before timing: forward, grad y and grad w against PyTorch in float64; largest error "
            f"relative to the largest magnitude, over all layers (tolerance {suite.tolerance(jnp.float32):g}): {cells}."]  # fmt: skip


def _columns(suite_: dict) -> list[str]:
    seen = []
    for row in suite_["results"].values():
        for k in (*row["times"], *row["skipped"]):
            if k not in seen:
                seen.append(k)
    return [*(m for m in METHODS if m in seen), *(p for p in PEERS if p in seen)]


def _row(row: dict, names: list[str], phase: str) -> str:
    times, ref = row["times"], row["times"]["torch"][phase]
    cells = []
    for n in names:
        if n in times:
            cell = f"{times[n][phase] * 1e3:.3g} ({times[n][phase] / ref:.2f}x)"
            cells.append(f"{cell} {row['auto']}" if n == "auto" else cell)
        else:
            cells.append(row["skipped"].get(n, "n/a"))
    return f"| {row['layer'].name}: {row['layer'].describe()} | " + " | ".join(cells) + " |"


def ratios(suite_: dict, phase: str, peer: str) -> list[float]:
    """auto's time over `peer`'s, per layer where both ran."""
    return [r["times"]["auto"][phase] / r["times"][peer][phase] for r in suite_["results"].values()
            if peer in r["times"] and "auto" in r["times"]]  # fmt: skip


def _against_lax(suite_: dict) -> list[str]:
    """auto / jax.lax and auto / the method it picks, per layer (flagged above FLAG), and the fastest method."""
    lines = [f"`auto` against `jax.lax` and against the method it picks (same code: near 1x unless dispatch costs "
             f"something), **bold** above {FLAG}x; and the fastest method (its time / auto's):", "",
             "| layer | auto picks | / jax.lax fwd | / jax.lax fwd+bwd | / pick fwd | / pick fwd+bwd | fastest fwd "
             "| fastest fwd+bwd |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in suite_["results"].values():
        t, pick = row["times"], row["auto"]
        if "auto" not in t or "jax.lax" not in t or pick not in t:
            continue
        cells = []
        for ref in ("jax.lax", pick):
            for phase in ("fwd", "fwd_bwd"):
                r = t["auto"][phase] / t[ref][phase]
                cells.append(f"**{r:.2f}x**" if r > FLAG else f"{r:.2f}x")
        for phase in ("fwd", "fwd_bwd"):
            best = min((m for m in METHODS if m in t and m != "auto"), key=lambda m: t[m][phase])
            cells.append(f"{best} ({t[best][phase] / t['auto'][phase]:.2f}x)")
        lines.append(f"| {row['layer'].name} | {pick} | " + " | ".join(cells) + " |")
    return lines


def _summary(suite_: dict) -> list[str]:
    lines = ["Time ratios of `auto` (below 1 means auto is faster):", "",
             "| auto against | forward geomean | forward worst | fwd+bwd geomean | fwd+bwd worst |", "|---|---|---|---|---|"]  # fmt: skip
    for peer in PEERS:
        f, b = ratios(suite_, "fwd", peer), ratios(suite_, "fwd_bwd", peer)
        if f:
            lines.append(f"| {peer} | {geomean(f):.2f}x | {max(f):.2f}x | {geomean(b):.2f}x | {max(b):.2f}x |")
    return lines


def _throughput(suite_: dict) -> list[str]:
    lines = ["Useful GFLOP/s of `auto` (share of the matmul rate) and PyTorch:", "",
             "| layer | auto fwd | auto fwd+bwd | torch fwd | torch fwd+bwd |", "|---|---|---|---|---|"]  # fmt: skip
    for row in suite_["results"].values():
        t, fl, cells = row["times"], row["layer"].flops, []
        for key in ("auto", "torch"):
            for phase, passes in (("fwd", 1), ("fwd_bwd", 3)):
                rate = passes * fl / t[key][phase] / 1e9 if key in t else float("nan")
                cells.append(f"{rate:.1f} ({100 * rate / suite_['sgemm']:.0f}%)")
        lines.append(f"| {row['layer'].name} | " + " | ".join(cells) + " |")
    return lines


def _compile(suite_: dict, names: list[str]) -> list[str]:
    jax_names = [n for n in names if n != "torch"]
    lines = [f"Compile time of fwd+bwd (s), from a cold cache (`auto` and `jax.lax`: the median of {COMPILE_REPEATS}, "
             f"interleaved); `auto` / `jax.lax` (**bold** above {COMPILE_FLAG}x); "
             "and the ops of each compiled fwd+bwd that run code (XLA compiles each: fusions, convolutions, "
             "dots, copies), `auto` / `jax.lax`:", "",
             "| layer | auto / jax.lax | ops | " + " | ".join(jax_names) + " |", "|---" * (len(jax_names) + 3) + "|"]  # fmt: skip
    for row in suite_["results"].values():
        c, k = row["compile"], row.get("kernels", {})
        r = c["auto"]["fwd_bwd"] / c["jax.lax"]["fwd_bwd"] if "auto" in c and "jax.lax" in c else float("nan")
        cells = [
            f"**{r:.2f}x**" if r > COMPILE_FLAG else f"{r:.2f}x",
            f"{k.get('auto', '?')} / {k.get('jax.lax', '?')}",
        ]
        cells += [f"{c[n]['fwd_bwd']:.2f}" if n in c else "n/a" for n in jax_names]
        lines.append(f"| {row['layer'].name} | " + " | ".join(cells) + " |")
    return lines


def _generator_lines(gen: dict) -> list[str]:
    layers = gen["layers"]
    shape = " -> ".join(f"{layer.c_in}" for layer in layers) + f" -> {layers[-1].c_out} ch"
    size = f"{layers[0].spatial[0]}x{layers[0].spatial[0]} -> {layers[-1].out_shape[-1]}x{layers[-1].out_shape[-1]}"
    lines = [f"DCGAN generator ({shape}, {size}, batch {layers[0].batch}, k4, ReLU, tanh): "
             "`jit(value_and_grad(loss)).lower().compile()` and the first call, from a cold cache (s; the run "
             f"with the median total of {COMPILE_REPEATS}, interleaved):", "",
             "| conv | compile | first call | total |", "|---|---|---|---|"]  # fmt: skip
    for name, t in gen.items():
        if name == "layers":
            continue
        lines.append(f"| {name} | {t['compile']:.2f} | {t['first_call']:.3f} | {t['compile'] + t['first_call']:.2f} |")
    ratio = (gen["auto"]["compile"] + gen["auto"]["first_call"]) / (
        gen["jax.lax"]["compile"] + gen["jax.lax"]["first_call"]
    )
    return lines + [
        "",
        f"auto / jax.lax: {ratio:.2f}x" + (f" (**above {COMPILE_FLAG}x**)" if ratio > COMPILE_FLAG else ""),
    ]


def _memory_lines(memory: dict) -> list[str]:
    mib = lambda b: f"{b / 2**20:.0f}"
    ref = memory.get("torch", {}).get("rss_growth") if isinstance(memory.get("torch"), dict) else None
    lines = [f"Peak memory of forward+backward, {MEMORY_LAYER.describe()}, each in a fresh process: growth of "
             "the peak resident set (VmHWM, reset first) over the resident set once inputs exist and the function "
             "is compiled (MiB), and for JAX also XLA's temp buffers from `memory_analysis()`:", "",
             "| contender | peak growth MiB | ratio to torch | XLA temp MiB |", "|---|---|---|---|"]  # fmt: skip
    for name, info in memory.items():
        if isinstance(info, str):
            lines.append(f"| {name} | {info} | | |")
            continue
        ratio = f"{info['rss_growth'] / ref:.2f}x" if ref else ""
        temp = mib(info["xla_temp"]) if "xla_temp" in info else ""
        lines.append(f"| {name} | {mib(info['rss_growth'])} | {ratio} | {temp} |")
    return lines


def plot(suite_: dict, path: str) -> None:
    """Bars of time relative to PyTorch (log scale), forward and forward+backward, per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in _columns(suite_) if n != "torch"]
    rows = list(suite_["results"].values())
    if not rows:  # `--only` matched no layer: the generator's compile time alone
        return
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(rows)), 8), sharex=True)
    width = 0.8 / len(names)
    for ax, phase in zip(axes, ("fwd", "fwd_bwd")):
        for i, n in enumerate(names):
            vals = [r["times"][n][phase] / r["times"]["torch"][phase] if n in r["times"] else np.nan for r in rows]
            ax.bar(np.arange(len(rows)) + i * width, vals, width, label=n)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{phase} time / PyTorch")
    axes[0].legend(ncol=len(names), fontsize=8)
    axes[1].set_xticks(np.arange(len(rows)) + 0.4, [r["layer"].name for r in rows], rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ entry


def main(argv: list[str]) -> int:
    """Run the suite and write `bench.md` and `bench.png` to `--out`."""
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="two tiny layers, 3 rounds, no memory runs, a small generator"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per layer (default 7)")
    parser.add_argument("--only", default="", help="run only layers whose name contains this text")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-generator", action="store_true", help="skip the DCGAN generator's compile time")
    parser.add_argument("--out", default="bench_out", help="output folder (default bench_out)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.memory_of:
        try:
            print(json.dumps(peak_memory(args.memory_of)))
        except ValueError:
            print(json.dumps("n/a (memory guard)"))
        return 0
    layers = tuple(layer for layer in (TINY if args.quick else LAYERS) if args.only.lower() in layer.name.lower())
    generator = None if args.no_generator else TINY_GENERATOR if args.quick else GENERATOR
    suite_ = run_suite(layers, 3 if args.quick else args.rounds, generator)
    memory = None if args.quick or args.no_memory else memory_table([*METHODS, *PEERS])
    os.makedirs(args.out, exist_ok=True)
    text = markdown(suite_, memory, argv)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    plot(suite_, os.path.join(args.out, "bench.png"))
    print(text)
    if not suite_["load"].quiet:
        print("\n" + "!" * 100 + "\n" + suite_["load"].describe() + "\n" + "!" * 100, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
