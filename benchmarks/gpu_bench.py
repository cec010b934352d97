"""`benchmarks/gpu.sh`: the decoder-layer suite on one GPU, float32 and bfloat16, every method against
`jax.lax.conv_transpose` and PyTorch (cuDNN).

Per layer and dtype: every contender compiled (several at once, in threads), checked against
PyTorch in float64 (value and both gradients; a contender that disagrees is reported, not timed),
then forward and forward+backward timed in interleaved rounds (medians; `block_until_ready` for
JAX, `torch.cuda.synchronize` for PyTorch), and memory: XLA's plan of one fwd+bwd (outputs +
temporaries, `compiled.memory_analysis()`) and, for PyTorch, the growth of
`torch.cuda.max_memory_allocated` over one fwd+bwd. The device's peak (`memory_stats()`) is
reported for the whole run. Writes `gpu_bench.md` and `gpu_bench.json` to `$OUT` if set, else
`bench_out/`. `--dry-run` runs the same code on CPU on one tiny layer in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import suite
from suite import LAYERS, METHODS, TINY, Contender, Layer, Load

CONTENDERS = (*METHODS, "jax.lax", "torch")
DTYPES = ("float32", "bfloat16")
FLAG = 1.05


def build_all(layer: Layer, dtype: str, workers: int) -> dict[str, Contender | str]:
    """Every contender for one layer and dtype; a string says why one is missing. JAX's compiles
    run in threads (XLA releases the GIL), so compile times are not reported here."""

    def one(name):
        try:
            return suite.build(layer, name, jnp.dtype(dtype))
        except NotImplementedError as e:
            return f"n/a ({str(e)[:40]})"
        except ValueError as e:
            return "n/a (memory guard)" if name == "matmul" else f"n/a ({str(e)[:40]})"

    jax_names = [n for n in CONTENDERS if n != "torch"]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        built = dict(zip(jax_names, pool.map(one, jax_names)))
    return built | {"torch": one("torch")}


def torch_peak(c: Contender) -> int | None:
    """Growth of PyTorch's CUDA peak allocation over one forward+backward (None on CPU)."""
    import torch

    if not torch.cuda.is_available() or c.args[0].device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    c.sync(c.fwd_bwd(*c.args))
    return torch.cuda.max_memory_allocated() - base


def run_layer(layer: Layer, dtype: str, rounds: int, workers: int, load: Load) -> dict:
    """Build, check, measure memory and time every contender of one layer in one dtype."""
    ref = suite.reference(layer, jnp.dtype(dtype))
    built = build_all(layer, dtype, workers)
    live, notes, errors, memory = {}, {}, {}, {}
    for name, c in built.items():
        if isinstance(c, str):
            notes[name] = c
            continue
        errors[name] = suite.check(c, ref)
        if errors[name] > suite.tolerance(jnp.dtype(dtype)):
            notes[name] = f"WRONG (error {errors[name]:.1e})"
            continue
        live[name] = c
        memory[name] = torch_peak(c) if name == "torch" else sum(c.memory.values()) if c.memory else None
    times = suite.time_contenders(live, rounds, load)
    return {"times": times, "notes": notes, "errors": errors, "memory": memory, "auto": _pick(layer)}


def _pick(layer: Layer) -> str:
    try:
        return suite.auto_pick(layer, jax.default_backend())
    except Exception as e:  # the dispatcher's platform names may differ; the table still has auto's own times
        return f"? ({type(e).__name__})"


def device_peak() -> str:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return f"{peak / 2**20:.0f} MiB" if peak is not None else "not reported by this backend"


# ------------------------------------------------------------------------------ report


def markdown(results: dict, header: list[str]) -> str:
    lines = [*header, ""]
    for dtype in DTYPES:
        rows = {name: r[dtype] for name, r in results.items() if dtype in r}
        if not rows:
            continue
        for phase, title in (("fwd", "forward"), ("fwd_bwd", "forward + backward")):
            lines += [f"**{dtype}, {title}**: median ms (ratio to PyTorch); `auto` = the method it picks;",
                      f"last column `auto` / `jax.lax` (**bold** above {FLAG}x).", ""]  # fmt: skip
            lines += [
                "| layer | " + " | ".join(CONTENDERS) + " | auto / jax.lax |",
                "|---" * (len(CONTENDERS) + 2) + "|",
            ]
            lines += [_row(name, r, phase) for name, r in rows.items()] + [""]
        lines += [f"**{dtype}, memory of one forward + backward** (MiB): JAX, XLA's plan (outputs + temporaries); "
                  "PyTorch, growth of `max_memory_allocated`.", ""]  # fmt: skip
        lines += ["| layer | " + " | ".join(CONTENDERS) + " |", "|---" * (len(CONTENDERS) + 1) + "|"]
        for name, r in rows.items():
            cells = [f"{r['memory'][n] / 2**20:.3g}" if r["memory"].get(n) is not None else "n/a" for n in CONTENDERS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _row(name: str, r: dict, phase: str) -> str:
    t = r["times"]
    ref = t["torch"][phase] if "torch" in t else None
    cells = []
    for n in CONTENDERS:
        if n not in t:
            cells.append(r["notes"].get(n, "n/a"))
            continue
        cell = f"{t[n][phase] * 1e3:.3g}" + (f" ({t[n][phase] / ref:.2f}x)" if ref else "")
        cells.append(f"{cell} {r['auto']}" if n == "auto" else cell)
    ratio = t["auto"][phase] / t["jax.lax"][phase] if "auto" in t and "jax.lax" in t else float("nan")
    cells.append(f"**{ratio:.2f}x**" if ratio > FLAG else f"{ratio:.2f}x")
    return f"| {name} | " + " | ".join(cells) + " |"


def _header(args, elapsed: float, load: Load, skipped: list[str]) -> list[str]:
    import torch

    dev = jax.devices()[0]
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    lines = [
        f"Command: `benchmarks/gpu.sh {' '.join(args.argv)}`. Device: {dev.device_kind} ({jax.default_backend()}); "
        f"jax {jax.__version__}, torch {torch.__version__} (cuDNN {cudnn}, "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, cudnn.benchmark={torch.backends.cudnn.benchmark}); "
        f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision}; {args.rounds} interleaved rounds; "
        f"{elapsed:.0f} s in all; device peak memory of the whole run {device_peak()}.",
        "",
        "Host " + load.describe(),
    ]
    if args.dry_run:
        lines += ["", "**Dry run**: a tiny layer on CPU; the timings mean nothing."]
    if skipped:
        lines += ["", f"**Time budget ({args.budget_s} s) spent**: not run: {', '.join(skipped)}."]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="one tiny layer on CPU, 2 rounds: a smoke test")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per layer (default 10)")
    parser.add_argument("--only", default="", help="run only layers whose name contains this text")
    parser.add_argument("--budget-s", type=float, default=400, help="start no new layer after this many seconds")
    parser.add_argument("--workers", type=int, default=8, help="threads compiling JAX contenders (default 8)")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.dry_run:
        jax.config.update("jax_platforms", "cpu")
        args.rounds, args.workers = min(args.rounds, 2), min(args.workers, os.cpu_count() or 1)
    elif jax.default_backend() == "cpu":
        print("gpu_bench: jax sees no GPU; use --dry-run to run on CPU", file=sys.stderr)
        return 2
    layers = [layer for layer in (TINY[:1] if args.dry_run else LAYERS) if args.only.lower() in layer.name.lower()]
    start, load, results, skipped = time.monotonic(), Load(), {}, []
    for layer in layers:
        if time.monotonic() - start > args.budget_s:
            skipped.append(layer.name)
            continue
        results[layer.name] = {}
        for dtype in DTYPES:
            print(f"gpu_bench: {layer.name} {dtype} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
            results[layer.name][dtype] = run_layer(layer, dtype, args.rounds, args.workers, load)
    header = _header(args, time.monotonic() - start, load.finish(), skipped)
    out = os.environ.get("OUT") or "bench_out"
    os.makedirs(out, exist_ok=True)
    text = markdown(results, header)
    with open(os.path.join(out, "gpu_bench.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "gpu_bench.json"), "w") as f:
        json.dump({"header": header, "results": results}, f, indent=1, default=str)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
