"""Cost of the explicit matrix form as the input grows: dense and sparse `W.T @ y` against the vjp form.

For each input size it times, interleaved, the forward pass and forward + backward (with a
real upstream gradient passed in as an argument) of three forms of one 2-D transposed
convolution, and reads each compiled forward + backward executable's memory from XLA
(`compiled.memory_analysis()`: arguments + outputs + temporaries, the buffers XLA plans for
one call; not the process's resident memory). Writes `bench_out/matrix_cost.md` (a markdown
table) and `bench_out/matrix_cost.png` (two log-log panels).

    .venv/bin/python benchmarks/matrix_cost.py                   # 4x4 .. 64x64, 3 channels
    .venv/bin/python benchmarks/matrix_cost.py --sizes 4 8 --repeats 3
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from transconv_jax import _matmul
from transconv_jax._spec import Spec, transpose_spatial
from transconv_jax._vjp import conv_transpose_vjp_form

FORMS = {
    "vjp": conv_transpose_vjp_form,
    "dense": lambda y, w, spec: _matmul.transpose_product(y, w, spec, "dense"),
    "sparse": lambda y, w, spec: _matmul.transpose_product(y, w, spec, "sparse"),
}


def main() -> None:
    args = _parse()
    spec = Spec(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    rows = [_measure(n, args, spec) for n in args.sizes]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix_cost.md").write_text(_table(rows, args))
    _plot(rows, out / "matrix_cost.png")
    print((out / "matrix_cost.md").read_text())


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="input height = width")
    p.add_argument("--channels", type=int, default=3, help="C_in = C_out")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="bench_out")
    return p.parse_args()


def _measure(n: int, args, spec: Spec) -> dict:
    """Medians of interleaved runs of every form at input size `n x n`, with XLA's memory plan."""
    c, k = args.channels, args.kernel
    rng = np.random.default_rng(n)
    y = jnp.asarray(rng.standard_normal((args.batch, c, n, n)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((c, c, k, k)), jnp.float32)
    out_shape = (args.batch, c, *transpose_spatial((n, n), (k, k), spec))
    g = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    fns = {name: _compile(form, spec, y, w, g) for name, form in FORMS.items()}
    times = {(name, part): [] for name in FORMS for part in ("fwd", "fwd+bwd")}
    for _ in range(args.repeats):
        for name, (fwd, both, _) in fns.items():
            times[name, "fwd"].append(_time(fwd, y, w))
            times[name, "fwd+bwd"].append(_time(both, y, w, g))
    sizes = _matmul.matrix_sizes((c, c, k, k), out_shape[1:], spec, np.float32)
    row = {"n": n, "dense_bytes": sizes[2], "sparse_bytes": sizes[3]}
    row |= {f"{name} {part}": statistics.median(t) for (name, part), t in times.items()}
    row |= {f"{name} mem": fns[name][2] for name in FORMS}
    _check_equal(fns, y, w, g)
    return row


def _compile(form, spec, y, w, g):
    """The jitted forward, forward + backward (vjp with `g` passed in), and the latter's XLA memory."""
    fwd = jax.jit(lambda y, w: form(y, w, spec))

    def both(y, w, g):
        out, vjp = jax.vjp(lambda y, w: form(y, w, spec), y, w)
        return out, *vjp(g)

    both = jax.jit(both)
    stats = both.lower(y, w, g).compile().memory_analysis()
    mem = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    jax.block_until_ready((fwd(y, w), both(y, w, g)))  # compile and warm up outside the timings
    return fwd, both, mem


def _time(f, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - start


def _check_equal(fns, y, w, g) -> None:
    """Every form gives the vjp form's value and gradients (float32, relative to the largest entry)."""
    ref = fns["vjp"][1](y, w, g)
    for name in ("dense", "sparse"):
        for a, b in zip(fns[name][1](y, w, g), ref, strict=True):
            err = float(jnp.abs(a - b).max() / jnp.abs(b).max())
            if err > 1e-5:
                raise RuntimeError(f"{name} differs from vjp by {err:.2e} (relative); the timings would mean nothing")


def _table(rows, args) -> str:
    head = (
        f"{args.batch} x {args.channels} x n x n input, {args.channels} output channels, {args.kernel}x{args.kernel} "
        f"kernel, stride 1, padding 1; medians of {args.repeats} interleaved runs on {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}), jax {jax.__version__}.\n\n"
        "| n | W dense | W sparse | vjp fwd | dense fwd | sparse fwd | vjp fwd+bwd | dense fwd+bwd "
        "| sparse fwd+bwd | vjp mem | dense mem | sparse mem |\n" + "|---" * 12 + "|\n"
    )
    lines = []
    for r in rows:
        cells = [f"{r['n']}x{r['n']}", _mb(r["dense_bytes"]), _mb(r["sparse_bytes"])]
        cells += [_ms(r[f"{m} {p}"]) for p in ("fwd", "fwd+bwd") for m in FORMS]
        cells += [_mb(r[f"{m} mem"]) for m in FORMS]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def _plot(rows, path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name in FORMS:
        ax_t.loglog(n, [r[f"{name} fwd+bwd"] * 1e3 for r in rows], "o-", label=name)
        ax_m.loglog(n, [r[f"{name} mem"] / 2**20 for r in rows], "o-", label=name)
    ax_t.set(xlabel="input size n (n x n)", ylabel="forward + backward, ms (median)", title="time")
    ax_m.set(xlabel="input size n (n x n)", ylabel="XLA buffers, MiB", title="memory (fwd + bwd)")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(v) for v in n], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
