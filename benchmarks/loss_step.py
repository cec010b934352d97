"""`auto` against PyTorch with fwd+bwd as a training step has it: the gradients of a loss.

Run: PYTHONPATH=. .venv/bin/python benchmarks/loss_step.py [--only NAME] [--rounds 11] [--quick | --stride-1 | --k4s2 | --generator]

`bench.py` times fwd+bwd with the cotangent an argument (`suite.fwd_bwd`); XLA:CPU may then run a
layer's backward beside its forward, both their buffers live. A training step's cotangent comes
from the forward, so its backward waits. Here both contenders compute the gradients of
`0.5 * sum((out - target) ** 2)` (the suite's third array the target): `suite.in_a_loss` of
`conv_transpose(method="auto")`, compiled; PyTorch's `F.conv_transpose{1,2,3}d`, then the same
loss and `backward()`. Their loss and both gradients are compared first (relative to the largest
magnitude, within `suite.tolerance`: 1e-4 on CPU); then interleaved rounds, medians, the ratio auto / torch per layer and
its geomean, and the load average.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

import transconv_jax as tc  # noqa: E402


def torch_step(layer: suite.Layer):
    """PyTorch's loss and gradients, as `(fn, args)`; `fn(*args)` returns them as numpy-convertible tensors."""
    import torch

    op = suite.torch_op(layer.ndim)
    y, w, target = (torch.tensor(a) for a in layer.arrays())
    y.requires_grad_(), w.requires_grad_()

    def fn(y, w, target):
        y.grad = w.grad = None
        loss = 0.5 * ((op(y, w, **layer.kwargs) - target) ** 2).sum()
        loss.backward()
        return loss.detach(), y.grad, w.grad

    return fn, (y, w, target)


def row(layer: suite.Layer, rounds: int, load: suite.Load) -> tuple[str, float]:
    """One markdown row and the ratio auto / torch."""
    args = tuple(jnp.asarray(a) for a in layer.arrays())
    f = lambda y, w: tc.conv_transpose(y, w, **layer.kwargs)  # noqa: E731
    auto = jax.jit(suite.in_a_loss(f)).lower(*args).compile()
    torch_fn, torch_args = torch_step(layer)
    got, want = auto(*args), torch_fn(*torch_args)
    err = max(suite.relative_error(np.asarray(a), b.numpy()) for a, b in zip(got, want, strict=True))
    if err > suite.tolerance(jnp.float32):
        raise AssertionError(f"{layer.name}: auto and torch differ by {err:.1e}")
    fns = {"auto": lambda *a: jax.block_until_ready(auto(*a)), "torch": lambda *a: torch_fn(*torch_args)}
    t = suite.interleaved_medians(fns, args, rounds, load)
    ratio = t["auto"] / t["torch"]
    cells = [f"{err:.0e}", f"{t['auto'] * 1e3:.3g}", f"{t['torch'] * 1e3:.3g}", f"{ratio:.2f}x"]
    return f"| {layer.name} | " + " | ".join(cells) + " |", ratio


def main(argv=None) -> None:
    import torch

    layers, rounds = suite.layers_from_arguments(__doc__.splitlines()[0], 11, argv)
    load = suite.Load()
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores, {rounds} interleaved rounds; median ms of the loss and both gradients\n")  # fmt: skip
    print("| layer | check | auto | torch | auto / torch |")
    print("|---|---|---|---|---|")
    ratios = []
    for layer in layers:
        line, ratio = row(layer, rounds, load)
        ratios.append(ratio)
        print(line, flush=True)
    print(f"\nauto / torch: geomean {suite.geomean(ratios):.2f}x, worst {max(ratios):.2f}x")
    print()
    print(load.finish().describe())


if __name__ == "__main__":
    main()
