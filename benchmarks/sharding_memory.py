"""Per-device memory of a 3-D transposed convolution split over 8 devices on its depth axis.

For each form it compiles the layer twice, on one device and with `y` sharded on D over
8 devices (`P(None, None, "sp")`), and reads XLA's plan (`compiled.memory_analysis()`: argument +
output + temporary bytes per device; compiled only, nothing runs). On a CPU host it simulates
the devices itself:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 .venv/bin/python benchmarks/sharding_memory.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import transconv_jax as tc

# A V-Net-like decoder layer: 64 -> 32 channels, 32^3 -> 64^3, k4 s2 p1 (float32).
Y_SHAPE, W_SHAPE, KWARGS = (1, 64, 32, 32, 32), (64, 32, 4, 4, 4), dict(stride=2, padding=1)


def per_device_bytes(method: str, y_shape=Y_SHAPE, w_shape=W_SHAPE, kwargs=None, devices: int = 1) -> int:
    """Argument + output + temporary bytes per device of the compiled layer, `y` split `devices` ways on D."""
    mesh = Mesh(np.array(jax.devices()[:devices]), ("sp",))
    y = jax.ShapeDtypeStruct(y_shape, jnp.float32, sharding=NamedSharding(mesh, P(None, None, "sp")))
    w = jax.ShapeDtypeStruct(w_shape, jnp.float32, sharding=NamedSharding(mesh, P()))
    kw = KWARGS if kwargs is None else kwargs
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **kw, method=method))
    mem = f.lower(y, w).compile().memory_analysis()
    return mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes


def main() -> None:
    if jax.device_count() < 8:
        raise SystemExit("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8 on a CPU host")
    print(f"y {Y_SHAPE}, w {W_SHAPE}, {KWARGS}, float32; MiB per device (arguments + outputs + temporaries)")
    print("| method | 1 device | 8 devices, D split | ratio |")
    print("|---|---:|---:|---:|")
    for method in ("vjp", "scatter", "subpixel", "auto"):
        one, eight = per_device_bytes(method), per_device_bytes(method, devices=8)
        print(f"| {method} | {one / 2**20:.1f} | {eight / 2**20:.1f} | {eight / one:.3f} |")


if __name__ == "__main__":
    main()
