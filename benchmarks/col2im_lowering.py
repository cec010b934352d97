"""The shipped scatter form against the prototype col2im lowerings in `col2im_variants.py`, end to end.

Every contender is a GEMM followed by col2im: `shipped` is `transconv_jax._scatter.conv_transpose_scatter_form`
(one einsum, `lax.split` per tap, each tap one contiguous `lax.pad` into its output phase, the phases
interleaved); the others are the prototype GEMM (`col2im_variants.gemm_taps`, layout "K") with one col2im
lowering each: `at` (`.at[].add` into strided slices of the full output), `pad` (one interior-padded
`lax.pad` per tap, summed), `phase_at` (`.at[].add` into per-phase buffers), `phase` (the prototype of the
shipped lowering) and `phase_pad`. Each is checked against the shipped form (value and both gradients)
before it is timed; forward and forward+backward (a real cotangent), median ms of interleaved rounds.

Run: PYTHONPATH=. python benchmarks/col2im_lowering.py [--variants pad,at,phase_at,phase] [--rounds 11]
"""

from __future__ import annotations

import argparse
import sys

import col2im_variants as proto
import jax
import numpy as np
import suite

from transconv_jax._scatter import conv_transpose_scatter_form

LAYERS = ("DCGAN 16x16", "U-Net k2 s2", "HiFi-GAN 1-D", "stride 1", "3-D U-Net k3 op1")


def contenders(layer: suite.Layer, variants: list[str]) -> dict[str, suite.Contender]:
    spec = suite.layer_spec(layer)
    forms = {"shipped": conv_transpose_scatter_form} | {v: proto.make_form2(v, "K") for v in variants}
    y, w, g = layer.arrays()
    return {
        name: suite.jax_contender(lambda y, w, f=f: f(y, w, spec), y, w, g, np.float32) for name, f in forms.items()
    }


def agree(found: dict[str, suite.Contender]) -> None:
    """Every variant gives the shipped form's value and gradients (float32 tolerance)."""
    shipped = found["shipped"]
    ref = [np.asarray(a) for a in shipped.fwd_bwd(*shipped.args)]
    for name, c in found.items():
        for a, b in zip(c.fwd_bwd(*c.args), ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="pad,at,phase_at,phase", help="prototype lowerings, comma-separated")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    load, rows = suite.Load(), []
    for layer in (layer for layer in suite.LAYERS if layer.name in LAYERS):
        found = contenders(layer, variants)
        agree(found)
        times = suite.time_contenders(found, args.rounds, load)
        cells = [f"{times[n]['fwd'] * 1e3:.2f} / {times[n]['fwd_bwd'] * 1e3:.2f}" for n in found]
        rows.append(f"| {layer.name}: {layer.describe()} | " + " | ".join(cells) + " |")
    names = ["shipped", *variants]
    print(f"Command: `python benchmarks/col2im_lowering.py {' '.join(argv)}`; jax {jax.__version__}, "
          f"{jax.default_backend()}; {args.rounds} interleaved rounds. {load.finish().describe()}\n")  # fmt: skip
    print("Forward / forward+backward, median ms:\n")
    print("| layer | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
