"""`benchmarks/gpu.sh`: the decoder-layer suite on one GPU, float32 and bfloat16, every method against
`jax.lax.conv_transpose` and PyTorch (cuDNN); `auto N*C` is `auto` on channels-last arrays, as the
Flax layers call it.

The layers are the CPU suite's with the batch times `--batch-scale` (8: a GPU's batch, so that a
call is the device's work rather than its launch). Per layer and dtype: every contender compiled
(several at once, in threads; one still compiling after `--compile-s` is left out), checked against
PyTorch in float64 (value and both gradients; a contender that disagrees is reported, not timed),
then forward and forward+backward timed in interleaved rounds. Each sample is about `--sample-s` of
back-to-back calls, waited for once (`block_until_ready` for JAX, `torch.cuda.synchronize` for
PyTorch, with `cudnn.benchmark` on as XLA autotunes its own); the table gives the median time per
call. Memory: XLA's plan of one fwd+bwd (outputs + temporaries, `compiled.memory_analysis()`) and,
for PyTorch, the growth of `torch.cuda.max_memory_allocated` over one fwd+bwd; the device's peak
(`memory_stats()`) for the whole run. A contender or layer that fails on the device is reported
with its error and the rest still run; the tables are written after every layer, to `$OUT` if set,
else `bench_out/` (`gpu_bench.md`, `gpu_bench.json`). `--dry-run` runs the same code on CPU on one
tiny layer in a few seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import suite
from suite import LAYERS, METHODS, TINY, Contender, Layer, Load

CONTENDERS = (*METHODS, suite.AUTO_CHANNELS_LAST, "jax.lax", "torch")  # auto N*C: the Flax layers' layout
DTYPES = ("float32", "bfloat16")
FLAG = 1.05


def build_all(layer: Layer, dtype: str, workers: int, compile_s: float) -> dict[str, Contender | str]:
    """Every contender for one layer and dtype; a string says why one is missing. JAX's compiles
    run in threads (XLA releases the GIL), so compile times are not reported here; a contender
    still compiling after `compile_s` is left out (its thread runs on; `main` ends with `os._exit`)."""

    def one(name):
        try:
            return suite.build(layer, name, jnp.dtype(dtype))
        except NotImplementedError as e:
            return f"n/a ({str(e)[:40]})"
        except ValueError as e:
            return "n/a (memory guard)" if name == "matmul" else f"n/a ({str(e)[:40]})"
        except Exception as e:  # a failure on this device is a finding: report it, go on with the rest
            traceback.print_exc()
            return f"ERROR ({type(e).__name__}: {str(e)[:60]})"

    jax_names = [n for n in CONTENDERS if n != "torch"]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    futures = {name: pool.submit(one, name) for name in jax_names}
    concurrent.futures.wait(futures.values(), timeout=compile_s)
    pool.shutdown(wait=False, cancel_futures=True)
    late = f"n/a (compile > {compile_s:g} s)"
    built = {n: late if f.cancelled() or not f.done() else f.result() for n, f in futures.items()}
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


def run_layer(layer: Layer, dtype: str, args: argparse.Namespace, load: Load) -> dict:
    """Build, check, measure memory and time every contender of one layer in one dtype."""
    ref = suite.reference(layer, jnp.dtype(dtype))
    built = build_all(layer, dtype, args.workers, args.compile_s)
    live, notes, errors, memory = {}, {}, {}, {}
    for name, c in built.items():
        if isinstance(c, str):
            notes[name] = c
            continue
        try:
            errors[name] = suite.check(c, ref)
        except Exception as e:
            traceback.print_exc()
            notes[name] = f"ERROR ({type(e).__name__}: {str(e)[:60]})"
            continue
        if errors[name] > suite.tolerance(jnp.dtype(dtype)):
            notes[name] = f"WRONG (error {errors[name]:.1e})"
            continue
        live[name] = c
        memory[name] = torch_peak(c) if name == "torch" else sum(c.memory.values()) if c.memory else None
    times = suite.time_contenders(live, args.rounds, load, sample_s=args.sample_s)
    return {"times": times, "notes": notes, "errors": errors, "memory": memory, "auto": _pick(layer, dtype)}


def _pick(layer: Layer, dtype: str) -> str:
    """The forms `auto` runs on this device: forward, and (after '/') the input and kernel gradients."""
    platform = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    try:
        return suite.auto_label(layer, platform, jnp.dtype(dtype))
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
        f"Command: `benchmarks/gpu.sh {' '.join(args.argv)}` at commit {os.environ.get('BENCH_COMMIT', 'unknown')}. Device: {dev.device_kind} ({jax.default_backend()}); "
        f"jax {jax.__version__}, torch {torch.__version__} (cuDNN {cudnn}, "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, cudnn.benchmark={torch.backends.cudnn.benchmark}); "
        f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision}; {args.rounds} interleaved rounds, "
        f"each sample {args.sample_s * 1e3:g} ms of back-to-back calls (at most {suite.MAX_REPEAT}); "
        f"{elapsed:.0f} s in all; device peak memory of the whole run {device_peak()}.",
        "",
        "Host " + load.describe(),
        "",
        f"Layers (the CPU suite's, batch x{args.batch_scale}): " + "; ".join(args.layers) + ".",
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
    parser.add_argument("--compile-s", type=float, default=90, help="leave out a contender still compiling after this")
    parser.add_argument("--batch-scale", type=int, default=8,
                        help="each layer's batch times this (default 8: a GPU's batch; the CPU suite's is 2-8)")  # fmt: skip
    parser.add_argument("--sample-s", type=float, default=0.005,
                        help="each timing sample: back-to-back calls for about this long (default 0.005)")  # fmt: skip
    args = parser.parse_args(argv)
    args.argv = argv
    if args.dry_run:
        jax.config.update("jax_platforms", "cpu")
        args.rounds, args.workers, args.batch_scale = min(args.rounds, 2), min(args.workers, os.cpu_count() or 1), 1
    elif jax.default_backend() == "cpu":
        print("gpu_bench: jax sees no GPU; use --dry-run to run on CPU", file=sys.stderr)
        return 2
    else:
        import torch

        torch.backends.cudnn.benchmark = True  # cuDNN picks its kernels by timing them, as XLA's autotuner does
    layers = [dataclasses.replace(layer, batch=layer.batch * args.batch_scale)
              for layer in (TINY[:1] if args.dry_run else LAYERS) if args.only.lower() in layer.name.lower()]  # fmt: skip
    args.layers = [f"{layer.name}: {layer.describe()}" for layer in layers]
    start, load, results, skipped = time.monotonic(), Load(), {}, []
    out = os.environ.get("OUT") or "bench_out"
    os.makedirs(out, exist_ok=True)
    for layer in layers:
        if time.monotonic() - start > args.budget_s:
            skipped.append(layer.name)
            continue
        results[layer.name] = {}
        for dtype in DTYPES:
            print(f"gpu_bench: {layer.name} {dtype} ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
            try:
                results[layer.name][dtype] = run_layer(layer, dtype, args, load)
            except Exception:  # a layer that breaks the bench is reported, and the others still run
                traceback.print_exc()
                print(f"gpu_bench: {layer.name} {dtype} FAILED, see the traceback above", file=sys.stderr)
        text = write(out, results, _header(args, time.monotonic() - start, load, skipped))  # after every layer
    text = write(out, results, _header(args, time.monotonic() - start, load.finish(), skipped))
    print(text, flush=True)
    sys.stderr.flush()
    os._exit(0)  # not waiting for a compile thread left running by `build_all`


def write(out: str, results: dict, header: list[str]) -> str:
    """Write `gpu_bench.md` and `gpu_bench.json` to `out`; returns the markdown."""
    text = markdown(results, header)
    with open(os.path.join(out, "gpu_bench.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "gpu_bench.json"), "w") as f:
        json.dump({"header": header, "results": results}, f, indent=1, default=str)
    return text


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
