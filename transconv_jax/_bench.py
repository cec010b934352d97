"""`python -m transconv_jax bench`: real decoder layers, every method against PyTorch, jax.lax and Flax.

For each layer and contender: the forward and the forward+backward (a real upstream gradient
passed in as an argument), interleaved over rounds, as medians; ratios to PyTorch; GFLOP/s of
useful work (`2 N prod(in) C_in C_out/g prod(k)` per pass, three passes for forward+backward)
and its share of the machine's float32 matmul rate measured in the same run; compile time.
Peak memory of one large layer is measured per contender in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._conv import flip_kernel
from ._dispatch import FORMS, auto_method, conv_transpose
from ._spec import conv_transpose_spec, dilated_kernel


@dataclasses.dataclass(frozen=True)
class Layer:
    """One transposed convolution of a real decoder, PyTorch's arguments."""

    name: str
    batch: int
    c_in: int
    c_out: int
    spatial: tuple[int, ...]
    kernel: int
    stride: int
    padding: int = 0
    output_padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups)  # fmt: skip

    @property
    def flops(self) -> float:
        """Useful multiply-adds x 2 of one pass: every input element times its kernel taps."""
        taps = self.kernel**self.ndim * self.c_out // self.groups
        return 2.0 * self.batch * math.prod(self.spatial) * self.c_in * taps

    def arrays(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        y = rng.standard_normal((self.batch, self.c_in, *self.spatial), dtype=np.float32)
        w = rng.standard_normal((self.c_in, self.c_out // self.groups, *(self.kernel,) * self.ndim), dtype=np.float32)
        return y, w * np.float32(1.0 / math.sqrt(self.c_in * self.kernel**self.ndim))

    def describe(self) -> str:
        extra = "".join(f" {k}{v}" for k, v in (("p", self.padding), ("op", self.output_padding)) if v)
        extra += f" d{self.dilation}" * (self.dilation > 1) + f" g{self.groups}" * (self.groups > 1)
        shape = "x".join(map(str, self.spatial))
        return f"{self.batch}x{self.c_in}x{shape} -> {self.c_out} ch, k{self.kernel} s{self.stride}{extra}"


LAYERS = (
    Layer("DCGAN 16x16", 8, 256, 128, (16, 16), 4, 2, 1),
    Layer("DCGAN 32x32", 8, 128, 64, (32, 32), 4, 2, 1),
    Layer("U-Net k2 s2", 8, 128, 64, (32, 32), 2, 2),
    Layer("U-Net k3 s2 op1", 8, 128, 64, (32, 32), 3, 2, 1, 1),
    Layer("FCN-8s x8", 2, 21, 21, (32, 32), 16, 8, 4),
    Layer("HiFi-GAN 1-D", 4, 512, 256, (200,), 16, 8, 4),
    Layer("V-Net 3-D k2 s2", 2, 64, 32, (16, 16, 16), 2, 2),
    Layer("3-D U-Net k3 op1", 2, 64, 32, (16, 16, 16), 3, 2, 1, 1),
    Layer("grouped (32 groups)", 8, 256, 256, (16, 16), 4, 2, 1, groups=32),
    Layer("dilated (d2)", 8, 64, 64, (32, 32), 3, 1, 2, dilation=2),
    Layer("stride 1", 8, 128, 64, (32, 32), 3, 1, 1),
)
QUICK = (
    Layer("tiny 2-D k4 s2", 2, 8, 4, (8, 8), 4, 2, 1),
    Layer("tiny 1-D k3 s2 op1", 2, 8, 4, (16,), 3, 2, 1, 1),
)
MEMORY_LAYER = Layer("memory: 256->512", 4, 64, 32, (256, 256), 4, 2, 1)
PEERS = ("torch", "jax.lax", "flax")
SLOW_S = 0.5  # a contender slower than this per fwd+bwd is timed in 3 rounds only


# ------------------------------------------------------------------------------ contenders


@dataclasses.dataclass
class Contender:
    """Compiled forward and forward+backward of one implementation, and their arguments."""

    fwd: Callable
    fwd_bwd: Callable
    args: tuple
    compile_s: float
    note: str = ""


def _jax_contender(f, y, w, g, note="") -> Contender:
    """Jit `f(y, w)` and `vjp(f)(g)`; the upstream gradient `g` is an argument."""

    def fwd_bwd(y, w, g):
        out, vjp = jax.vjp(f, y, w)
        return out, vjp(g)

    args = tuple(map(jnp.asarray, (y, w, g)))
    start = time.perf_counter()
    fwd, fb = jax.jit(f).lower(*args[:2]).compile(), jax.jit(fwd_bwd).lower(*args).compile()
    return Contender(lambda y, w, g: fwd(y, w), fb, args, time.perf_counter() - start, note)


def _lax_fn(layer: Layer):
    """`jax.lax.conv_transpose`'s lowering (lhs dilation, flipped kernel), with groups."""
    spec = layer_spec(layer)
    dk = dilated_kernel((layer.kernel,) * layer.ndim, spec.dilation)
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding, strict=False)]
    dn = jax.lax.conv_dimension_numbers((1,) * (layer.ndim + 2), (1,) * (layer.ndim + 2), None)

    def f(y, w):
        return jax.lax.conv_general_dilated(y, flip_kernel(w, layer.groups), (1,) * layer.ndim, pads,
                                            lhs_dilation=spec.stride, rhs_dilation=spec.dilation,
                                            dimension_numbers=dn, feature_group_count=layer.groups)  # fmt: skip

    return f


def _flax_contender(layer: Layer, y, w, g) -> Contender:
    """Flax's `linen.ConvTranspose` on channels-last data (its own layout), no bias."""
    if layer.groups > 1:
        raise NotImplementedError("flax.linen.ConvTranspose has no groups")
    import flax.linen as nn

    spec = layer_spec(layer)
    dk = dilated_kernel((layer.kernel,) * layer.ndim, spec.dilation)
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(dk, spec.padding, strict=False)]
    module = nn.ConvTranspose(layer.c_out, (layer.kernel,) * layer.ndim, (layer.stride,) * layer.ndim, pads,
                              (layer.dilation,) * layer.ndim, use_bias=False, transpose_kernel=True)  # fmt: skip
    last = lambda a: np.moveaxis(a, 1, -1)  # noqa: E731
    kernel = w.transpose(*range(2, w.ndim), 1, 0)  # (*k, C_out, C_in): flax's kernel for transpose_kernel
    f = lambda y, k: module.apply({"params": {"kernel": k}}, y)  # noqa: E731
    return _jax_contender(f, last(y), kernel, last(g), "channels-last")


def _torch_contender(layer: Layer, y, w, g) -> Contender:
    import torch
    import torch.nn.functional as F

    op = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[layer.ndim]
    ty, tw = torch.tensor(y, requires_grad=True), torch.tensor(w, requires_grad=True)

    def fwd(y, w, g):
        with torch.no_grad():
            return op(y, w, **layer.kwargs)

    def fwd_bwd(y, w, g):
        y.grad = w.grad = None
        out = op(y, w, **layer.kwargs)
        out.backward(g)
        return out, y.grad, w.grad

    return Contender(fwd, fwd_bwd, (ty, tw, torch.tensor(g)), 0.0)


def layer_spec(layer: Layer):
    """The canonical `Spec` of a layer."""
    return conv_transpose_spec(
        *_shapes(layer), **layer.kwargs, output_shape=None, dimension_numbers=None, precision=None
    )[0]


def _shapes(layer: Layer):
    y = jax.ShapeDtypeStruct((layer.batch, layer.c_in, *layer.spatial), jnp.float32)
    w = jax.ShapeDtypeStruct((layer.c_in, layer.c_out // layer.groups, *(layer.kernel,) * layer.ndim), jnp.float32)
    return y, w


def contenders(layer: Layer) -> dict[str, Contender | str]:
    """Every method in `FORMS` and the peers; a string says why one is not available."""
    y, w = layer.arrays()
    out_shape = jax.eval_shape(lambda y, w: conv_transpose(y, w, **layer.kwargs, method="vjp"), *_shapes(layer)).shape
    g = np.random.default_rng(1).standard_normal(out_shape, dtype=np.float32)
    makers = {m: _method_maker(layer, m) for m in FORMS}
    makers["jax.lax"] = lambda y, w, g: _jax_contender(_lax_fn(layer), y, w, g)
    makers["flax"] = lambda y, w, g: _flax_contender(layer, y, w, g)
    makers["torch"] = lambda y, w, g: _torch_contender(layer, y, w, g)
    found = {}
    for name, make in makers.items():
        try:
            found[name] = make(y, w, g)
        except NotImplementedError:
            continue
        except ValueError as e:
            found[name] = "n/a (memory guard)" if name == "matmul" else f"n/a ({str(e)[:40]})"
    return found


def _method_maker(layer: Layer, method: str):
    f = lambda y, w: conv_transpose(y, w, **layer.kwargs, method=method)  # noqa: E731
    return lambda y, w, g: _jax_contender(f, y, w, g)


# ------------------------------------------------------------------------------ timing


def _block(out):
    return jax.block_until_ready(out) if not hasattr(out, "detach") else out


def _time_once(fn, args) -> float:
    start = time.perf_counter()
    _block(fn(*args))
    return time.perf_counter() - start


def time_layer(found: dict, rounds: int, progress=None) -> dict[str, dict]:
    """Interleave the contenders: each round runs every one once (forward, then fwd+bwd)."""
    live = {k: c for k, c in found.items() if isinstance(c, Contender)}
    times = {k: {"fwd": [], "fwd_bwd": []} for k in live}
    for c in live.values():  # warm-up
        _time_once(c.fwd, c.args), _time_once(c.fwd_bwd, c.args)
    for r in range(rounds):
        for name, c in live.items():
            if r >= 3 and statistics.median(times[name]["fwd_bwd"]) > SLOW_S:
                continue
            times[name]["fwd"].append(_time_once(c.fwd, c.args))
            times[name]["fwd_bwd"].append(_time_once(c.fwd_bwd, c.args))
        if progress is not None:
            progress.update(1)
    return {
        k: {p: statistics.median(v) for p, v in t.items()} | {"compile": live[k].compile_s} for k, t in times.items()
    }


def sgemm_rate(n: int = 2048, rounds: int = 7) -> float:
    """GFLOP/s of a float32 `n x n` matmul in jax on this machine."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    f = jax.jit(lambda a, b: a @ b)
    _block(f(a, a))
    return 2.0 * n**3 / statistics.median(_time_once(f, (a, a)) for _ in range(rounds)) / 1e9


# ------------------------------------------------------------------------------ peak memory


def peak_memory(name: str, layer: Layer = MEMORY_LAYER) -> dict:
    """Forward+backward of `layer` by one contender in this process: growth of the peak resident
    set (VmHWM, reset first) over the resident set once inputs exist and it is compiled, and
    for JAX XLA's own temp-buffer size."""
    y, w = layer.arrays()
    c = _memory_contender(name, layer, y, w)
    del y, w
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    base = _status_bytes("VmRSS")
    _block(c.fwd_bwd(*c.args))
    info = {"rss_growth": _status_bytes("VmHWM") - base}
    if hasattr(c.fwd_bwd, "memory_analysis"):
        info["xla_temp"] = c.fwd_bwd.memory_analysis().temp_size_in_bytes
    return info


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _memory_contender(name, layer, y, w) -> Contender:
    out = jax.eval_shape(lambda y, w: conv_transpose(y, w, **layer.kwargs, method="vjp"), *_shapes(layer)).shape
    g = np.ones(out, np.float32)
    if name == "torch":
        return _torch_contender(layer, y, w, g)
    if name == "flax":
        return _flax_contender(layer, y, w, g)
    f = _lax_fn(layer) if name == "jax.lax" else (lambda y, w: conv_transpose(y, w, **layer.kwargs, method=name))
    return _jax_contender(f, y, w, g)


def memory_table(names) -> dict[str, dict | str]:
    """`peak_memory` of each contender, each in a fresh subprocess."""
    results = {}
    for name in names:
        cmd = [sys.executable, "-m", "transconv_jax", "bench", "--memory-of", name]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = run.stdout.strip().splitlines()
        results[name] = json.loads(lines[-1]) if run.returncode == 0 and lines else f"failed: {run.stderr[-120:]!r}"
    return results


# ------------------------------------------------------------------------------ report


def run_suite(layers, rounds: int) -> dict:
    """Time every layer; the method `auto` picks is reported, its numbers are that method's."""
    from tqdm import tqdm

    results, sgemm = {}, [sgemm_rate()]
    with tqdm(total=len(layers) * rounds, desc="bench", unit="round", file=sys.stderr) as bar:
        for layer in layers:
            bar.set_postfix_str(layer.name)
            found = contenders(layer)
            timed = time_layer(found, rounds, bar)
            results[layer.name] = {"layer": layer, "times": timed, "auto": _auto_pick(layer),
                                   "skipped": {k: v for k, v in found.items() if isinstance(v, str)}}  # fmt: skip
    sgemm.append(sgemm_rate())
    return {"results": results, "sgemm": max(sgemm), "rounds": rounds}


def _auto_pick(layer: Layer) -> str:
    y, w = _shapes(layer)
    return auto_method(layer_spec(layer), y.shape, w.shape, jax.default_backend())


def _ratio_cell(t: float, ref: float) -> str:
    return f"{t * 1e3:.1f} ({t / ref:.2f}x)"


def markdown(suite: dict, memory: dict | None, argv: list[str]) -> str:
    """The whole report: machine, per-layer tables, geomeans, memory."""
    lines = [_machine_line(suite, argv), ""]
    names = _columns(suite)
    for phase, title in (("fwd", "Forward"), ("fwd_bwd", "Forward + backward")):
        lines += [f"**{title}**: median ms (ratio to PyTorch); `auto` = the method it picks.", ""]
        lines += ["| layer | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in suite["results"].values():
            lines.append(_row(row, names, phase))
        lines.append("")
    lines += _summary(suite) + [""] + _throughput(suite) + [""] + _compile(suite, names)
    if memory:
        lines += [""] + _memory_lines(memory)
    return "\n".join(lines) + "\n"


def _machine_line(suite: dict, argv: list[str]) -> str:
    import torch

    cpu = _cpu_model()
    flags = os.environ.get("XLA_FLAGS")
    threads = f"XLA_FLAGS='{flags}'" if flags else "default threads"
    return (f"Command: `python -m transconv_jax bench {' '.join(argv)}`. Machine: {cpu}, {os.cpu_count()} cores, "
            f"backend {jax.default_backend()}; jax {jax.__version__} ({threads}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {suite['rounds']} interleaved rounds; float32 matmul (jax, "
            f"2048^3) {suite['sgemm']:.0f} GFLOP/s.")  # fmt: skip


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def _columns(suite: dict) -> list[str]:
    seen = []
    for row in suite["results"].values():
        for k in (*row["times"], *row["skipped"]):
            if k not in seen and k != "torch":
                seen.append(k)
    methods = [k for k in seen if k not in PEERS]
    return ["auto", *methods, "torch", *(p for p in PEERS[1:] if p in seen)]


def _row(row: dict, names: list[str], phase: str) -> str:
    times, ref = row["times"], row["times"]["torch"][phase]
    cells = []
    for n in names:
        key = row["auto"] if n == "auto" else n
        if key in times:
            cell = _ratio_cell(times[key][phase], ref)
            cells.append(f"{cell} {key}" if n == "auto" else cell)
        else:
            cells.append(row["skipped"].get(key, "n/a"))
    return f"| {row['layer'].name}: {row['layer'].describe()} | " + " | ".join(cells) + " |"


def _geomean(xs) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")


def ratios(suite: dict, phase: str, peer: str) -> list[float]:
    """auto's time over `peer`'s, per layer where both ran."""
    out = []
    for row in suite["results"].values():
        t = row["times"]
        if peer in t and row["auto"] in t:
            out.append(t[row["auto"]][phase] / t[peer][phase])
    return out


def _summary(suite: dict) -> list[str]:
    lines = [
        "| auto against | forward geomean | forward worst | fwd+bwd geomean | fwd+bwd worst |",
        "|---|---|---|---|---|",
    ]
    for peer in PEERS:
        f, b = ratios(suite, "fwd", peer), ratios(suite, "fwd_bwd", peer)
        if f:
            lines.append(f"| {peer} | {_geomean(f):.2f}x | {max(f):.2f}x | {_geomean(b):.2f}x | {max(b):.2f}x |")
    return ["Time ratios of `auto` (below 1 means auto is faster):", ""] + lines


def _throughput(suite: dict) -> list[str]:
    lines = ["Useful GFLOP/s of `auto` (share of the matmul rate) and PyTorch:", "",
             "| layer | auto fwd | auto fwd+bwd | torch fwd | torch fwd+bwd |", "|---|---|---|---|---|"]  # fmt: skip
    for row in suite["results"].values():
        t, fl, cells = row["times"], row["layer"].flops, []
        for key in (row["auto"], "torch"):
            for phase, passes in (("fwd", 1), ("fwd_bwd", 3)):
                rate = passes * fl / t[key][phase] / 1e9
                cells.append(f"{rate:.1f} ({100 * rate / suite['sgemm']:.0f}%)")
        lines.append(f"| {row['layer'].name} | " + " | ".join(cells) + " |")
    return lines


def _compile(suite: dict, names: list[str]) -> list[str]:
    jax_names = [n for n in names if n not in ("auto", "torch")]
    lines = ["Compile time, forward and fwd+bwd together (s):", "", "| layer | " + " | ".join(jax_names) + " |",
             "|---" * (len(jax_names) + 1) + "|"]  # fmt: skip
    for row in suite["results"].values():
        cells = [f"{row['times'][n]['compile']:.2f}" if n in row["times"] else "n/a" for n in jax_names]
        lines.append(f"| {row['layer'].name} | " + " | ".join(cells) + " |")
    return lines


def _memory_lines(memory: dict) -> list[str]:
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    ref = memory.get("torch", {}).get("rss_growth") if isinstance(memory.get("torch"), dict) else None
    lines = [f"Peak memory of forward+backward, {MEMORY_LAYER.describe()}, each in a fresh process: growth of "
             "the peak resident set (VmHWM, reset first) over the resident set once inputs exist and the function "
             "is compiled (MiB), and "
             "for JAX also XLA's temp buffers from `memory_analysis()`:", "",
             "| contender | peak growth MiB | ratio to torch | XLA temp MiB |", "|---|---|---|---|"]  # fmt: skip
    for name, info in memory.items():
        if isinstance(info, str):
            lines.append(f"| {name} | {info} | | |")
            continue
        ratio = f"{info['rss_growth'] / ref:.2f}x" if ref else ""
        lines.append(
            f"| {name} | {mib(info['rss_growth'])} | {ratio} | {mib(info['xla_temp']) if 'xla_temp' in info else ''} |"
        )
    return lines


def plot(suite: dict, path: str) -> None:
    """Bars of time relative to PyTorch (log scale), forward and forward+backward, per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in _columns(suite) if n != "torch"]
    rows = list(suite["results"].values())
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(rows)), 8), sharex=True)
    width = 0.8 / len(names)
    for ax, phase in zip(axes, ("fwd", "fwd_bwd"), strict=False):
        for i, n in enumerate(names):
            keys = [r["auto"] if n == "auto" else n for r in rows]
            vals = [
                r["times"][k][phase] / r["times"]["torch"][phase] if k in r["times"] else np.nan
                for k, r in zip(keys, rows, strict=False)
            ]
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
    """Run the suite and write `bench_out/bench.md` and `bench_out/bench.png`."""
    parser = argparse.ArgumentParser(prog="python -m transconv_jax bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny layers, 3 rounds, no memory runs (~30 s)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per layer (default 7)")
    parser.add_argument("--only", default="", help="run only layers whose name contains this text")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
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
    layers = QUICK if args.quick else tuple(l for l in LAYERS if args.only.lower() in l.name.lower())  # noqa: E741
    suite = run_suite(layers, 3 if args.quick else args.rounds)
    memory = None if args.quick or args.no_memory else memory_table(["auto", *FORMS, *PEERS])
    os.makedirs(args.out, exist_ok=True)
    text = markdown(suite, memory, argv)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    plot(suite, os.path.join(args.out, "bench.png"))
    print(text)
    return 0
