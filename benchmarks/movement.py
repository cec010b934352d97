"""Where `auto`'s fwd+bwd time goes on each layer: the products (GEMMs, convolutions) and the data
movement around them, against PyTorch's fwd+bwd.

Run: PYTHONPATH=. .venv/bin/python benchmarks/movement.py [--only NAME] [--rounds 9] [--quick]

XLA:CPU runs the independent ops of a program at the same time, so the op times of a profile
overlap. This script runs them one after another instead (it sets
`--xla_cpu_enable_concurrency_optimized_scheduler=false` in `XLA_FLAGS` for its own process, before
JAX starts), so that they add up. For each layer of the suite:

- **wall**: the median time per call of `auto`'s compiled fwd+bwd (value and both gradients, a
  real upstream gradient passed as an argument), so scheduled, checked against PyTorch in float64
  first; interleaved with PyTorch's (`torch`, oneDNN);
- **data movement**: the time of every op of that program that is not a product, from a
  `jax.profiler` trace (loop fusions: layout copies and transposes, im2col and col2im's slices, pads
  and concatenates): these ops run on the calling thread, so the trace times them fully;
- **products**: wall minus data movement: the GEMMs and convolutions (YNNPACK fusions, dots,
  convolutions; those XLA hands to its Eigen pool show less time in a trace than they take);
- **at the matmul rate**: the three products' useful FLOPs at this machine's rate for a float32
  2048^3 matmul, measured in the same run: what the products would take at that rate;
- the last column, products / torch: `auto`'s time against PyTorch's if its data movement were
  free. Where it is at most 1.5x but wall / torch is above, the data movement puts the layer
  over 1.5x; where it is above 1.5x, the products alone do.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_enable_concurrency_optimized_scheduler=false"]
).strip()

import re  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
from bench import sgemm_rate  # noqa: E402
from profile_layer import profile  # noqa: E402

PRODUCT = re.compile(r"^(ynn_fusion|dot|convolution|conv_general_dilated|custom-call)")  # the GEMMs and convolutions
CONTAINER = re.compile(r"^(while|conditional|call)\b")  # their body's ops are in the trace too


def movement_ms(compiled, args, calls: int) -> float:
    """Milliseconds per call of the ops of `compiled` that are neither products nor containers."""
    ops = profile(compiled, args, calls)
    return 1e3 * sum(t for name, t in ops.items() if not PRODUCT.match(name) and not CONTAINER.match(name))


def main(argv=None) -> None:
    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 9, argv)
    load = suite.Load()
    rate = sgemm_rate(1024 if layers == list(suite.TINY) else 2048)
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, ops one after another; {rounds} interleaved rounds, "
          f"median ms; float32 matmul {rate:.0f} GFLOP/s")  # fmt: skip
    print()
    print("| layer | wall | data movement | products | at the matmul rate | torch | wall / torch | products / torch |")
    print("|---|---|---|---|---|---|---|---|")
    for layer in layers:
        live = {name: suite.build(layer, name) for name in ("auto", "torch")}
        error = suite.check(live["auto"], suite.reference(layer, jnp.float32))
        if error > suite.tolerance("float32"):
            raise AssertionError(f"{layer.name}: auto differs from torch by {error:.1e}")
        times = suite.time_contenders(live, rounds, load)
        wall, torch_ms = (1e3 * times[name]["fwd_bwd"] for name in ("auto", "torch"))
        moved = movement_ms(live["auto"].fwd_bwd, live["auto"].args, calls=rounds)
        products = wall - moved
        ideal = 3 * layer.flops / (rate * 1e9) * 1e3
        cells = [f"{wall:.3g}", f"{moved:.3g} ({moved / wall:.0%})", f"{products:.3g}", f"{ideal:.3g}",
                 f"{torch_ms:.3g}", f"{wall / torch_ms:.2f}x", f"{products / torch_ms:.2f}x"]  # fmt: skip
        print(f"| {layer.name} | " + " | ".join(cells) + " |", flush=True)
        load.sample()
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
