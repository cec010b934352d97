"""XLA's planned temp buffers of one form on the memory layer of bench.py: forward, backward alone, fwd+bwd.

Run: PYTHONPATH=. .venv/bin/python benchmarks/form_memory.py [METHOD ...]   (default: subpixel scatter vjp auto)

`compiled.memory_analysis()` of each jitted function, from shapes only (nothing is allocated or run).
"""

import sys

import jax
import jax.numpy as jnp

import transconv_jax as tc

y = jax.ShapeDtypeStruct((4, 64, 256, 256), jnp.float32)
w = jax.ShapeDtypeStruct((64, 32, 4, 4), jnp.float32)
g = jax.ShapeDtypeStruct((4, 32, 512, 512), jnp.float32)

print("layer: 4x64x256x256 -> 32 ch, k4 s2 p1, float32; MiB of XLA temp buffers (output buffers in brackets)")
for method in sys.argv[1:] or ["subpixel", "scatter", "vjp", "auto"]:

    def f(y, w, method=method):
        return tc.conv_transpose(y, w, stride=2, padding=1, method=method)

    def bwd(y, w, g):
        return jax.vjp(f, y, w)[1](g)

    def fwd_bwd(y, w, g):
        out, vjp = jax.vjp(f, y, w)
        return out, vjp(g)

    row = []
    for fn, args in ((f, (y, w)), (bwd, (y, w, g)), (fwd_bwd, (y, w, g))):
        ma = jax.jit(fn).lower(*args).compile().memory_analysis()
        row.append(f"{ma.temp_size_in_bytes / 2**20:.0f} ({ma.output_size_in_bytes / 2**20:.0f})")
    print(f"{method:<9} forward {row[0]:>10}   backward {row[1]:>10}   fwd+bwd {row[2]:>10}")
