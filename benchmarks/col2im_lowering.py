"""col2im lowerings for the scatter form, timed alone: forward and its vjp with a real cotangent, interleaved medians.

Run: .venv/bin/python benchmarks/col2im_lowering.py pad,at,phase_at,phase
"""

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import col2im_variants as proto
import jax
import jax.numpy as jnp
import numpy as np

from transconv_jax._spec import Spec, transpose_spatial

LAYERS = {
    "dcgan": ((8, 128), (16, 16), (4, 4), Spec((2, 2), ((1, 1), (1, 1)), (1, 1), 1)),
    "unet": ((8, 64), (32, 32), (2, 2), Spec((2, 2), ((0, 0), (0, 0)), (1, 1), 1)),
    "hifigan": ((1, 256), (200,), (16,), Spec((8,), ((4, 4),), (1,), 1)),
    "k3s1p1 64ch 32x32 b8": ((8, 64), (32, 32), (3, 3), Spec((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
    "3d k3s2p1 32ch 8^3 b2": ((2, 32), (8, 8, 8), (3, 3, 3), Spec((2, 2, 2), ((1, 1),) * 3, (1, 1, 1), 1)),
}
variants = sys.argv[1].split(",")
rng = np.random.default_rng(0)
for name, (NC, sp, k, spec) in LAYERS.items():
    out_sp = transpose_spatial(sp, k, spec)
    parts = [jnp.asarray(rng.standard_normal((*NC, *sp)), jnp.float32) for _ in range(int(np.prod(k)))]
    cot = jnp.asarray(rng.standard_normal((*NC, *out_sp)), jnp.float32)
    fns = {}
    ref = None
    for v in variants:
        f = jax.jit(lambda parts, v=v: proto.VARIANTS[v](proto.TapList(parts, k), spec, k, sp, out_sp, NC))
        b = jax.jit(lambda parts, c, f=f: jax.vjp(f, parts)[1](c))
        o = f(parts)
        if ref is None:
            ref = o
        np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
        jax.block_until_ready(b(parts, cot))
        fns[v] = (f, b)
    res = {v: ([], []) for v in fns}
    for _ in range(11):
        for v, (f, b) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(parts))
            t1 = time.perf_counter()
            jax.block_until_ready(b(parts, cot))
            t2 = time.perf_counter()
            res[v][0].append(t1 - t0)
            res[v][1].append(t2 - t1)
    print(f"{name}: out {(*NC, *out_sp)}, {len(parts)} taps")
    for v, (a, bb) in res.items():
        print(f"   {v:10s} col2im {np.median(a) * 1e3:7.2f} ms   its vjp {np.median(bb) * 1e3:7.2f} ms")
