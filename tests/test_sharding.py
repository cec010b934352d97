"""Sharding over 8 simulated CPU devices: every form keeps batch, spatial and channel sharding.

The checks run in one subprocess with `--xla_force_host_platform_device_count=8` (the flag must be
set before JAX starts). For each form and `auto`, 2-D and 3-D, under `jax.jit`:
- the result's `sharding.spec` is the one a user expects (not its device count: a replicated
  array spans 8 devices too): batch -> batch, spatial (H in 2-D, D in 3-D) -> the same axis,
  the kernel's output channels (axis 1) -> the result's channel axis;
- the compiled HLO has no all-gather of an activation-sized array, "activation-sized" meaning
  more elements than the kernel (gathering the small, replicated-by-use kernel is fine);
- the values equal the single-device ones;
- for every form but vjp and matmul, the same of both gradients: the input gradient keeps the
  input's sharding and nothing activation-sized is all-gathered (the vjp form's kernel gradient
  is XLA's own weight gradient of an lhs-dilated conv, which GSPMD all-gathers under spatial
  sharding; `auto` never takes that one).
The matmul form is the documented exception for a spatially sharded input: its matrix spans the
whole grid of an example, so each device computes its input slice's share of the whole output,
an all-reduce sums them, and the result is replicated (no all-gather either; values still equal).
One large 3-D layer split 8 ways on D takes at most 1/4 of the unsplit per-device memory
(`benchmarks/sharding_memory.py`, which prints the README's figure). Under a mesh with Explicit
axes (`jax.make_mesh`'s default), batch sharding gives the same values and both gradients for
every form but vjp (jax's own conv gradients ask for an out_sharding there). A grouped layer with
its batch sharded: scatter, subpixel and `auto` gather nothing, gradients included.
"""

import os
import subprocess
import sys

import pytest
from oracle import xla_flags

from transconv_jax._dispatch import FORMS

SHARDING_CHILD = r"""
import re, sys
sys.path.insert(0, "benchmarks")
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flax import nnx
import transconv_jax as tc
from transconv_jax._dispatch import FORMS
from sharding_memory import per_device_bytes

assert jax.device_count() == 8, jax.devices()
line = Mesh(np.array(jax.devices()), ("sp",))
grid = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
only = sys.argv[1].split(",") if len(sys.argv) > 1 else [*FORMS, "auto"]

# 2-D k4 s2 p1 (auto: subpixel forward, fused phases; on a layer this small, scatter's gradients); 3-D k3 s2 p1 op1
# (auto: scatter; subpixel per phase); 3-D k3 s1 p1 (auto: scatter's forward, subpixel's gradients).
# Output sizes divide 8; C_out divides the 'model' axis.
# (y shape, w shape, keywords); torch (the oracle of the other tests) is not imported: it costs seconds here.
CONFIGS = [
    ((8, 4, 8, 8), (4, 4, 4, 4), dict(stride=2, padding=1)),
    ((8, 4, 8, 4, 4), (4, 4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((8, 4, 8, 4, 4), (4, 4, 3, 3, 3), dict(stride=1, padding=1)),  # 3-D stride 1: subpixel's GEMMs on CPU
]


def assert_close(actual, expected, err_msg=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=err_msg)
CASES = {  # name: (y sharding, w sharding, expected result spec)
    "batch": (NamedSharding(line, P("sp")), NamedSharding(line, P()), P("sp")),
    "spatial": (NamedSharding(line, P(None, None, "sp")), NamedSharding(line, P()), P(None, None, "sp")),
    "channel": (NamedSharding(grid, P("data")), NamedSharding(grid, P(None, "model")), P("data", "model")),
}


def gathered_sizes(hlo):
    # The result shape of every all-gather in the compiled HLO text, as an element count.
    shapes = re.findall(r"= \w+\[([\d,]*)\]\S* all-gather(?:-start)?\(", hlo)
    return [int(np.prod([int(d) for d in s.split(",") if d])) for s in shapes]


failures = []
rng = np.random.default_rng(0)
for y_shape, w_shape, kw in CONFIGS:
    y, w = rng.standard_normal(y_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    nd = len(y_shape) - 2
    for method in only:
        f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **kw, method=method))
        single = f(y, w)
        for case, (ys, ws, expected) in CASES.items():
            ya, wa = jax.device_put(y, ys), jax.device_put(w, ws)
            compiled = f.lower(ya, wa).compile()
            out = compiled(ya, wa)
            assert_close(out, single, err_msg=f"{method} {case} {nd}-D")
            big = [n for n in gathered_sizes(compiled.as_text()) if n > w.size]
            if method == "matmul" and case == "spatial":
                # The documented exception: W.T @ y spans the whole grid of an example, so each device
                # sums its slice's share of the whole output (an all-reduce) and the result is replicated.
                expected = P()
            if out.sharding.spec != expected or big:
                failures.append(f"{nd}-D {method} {case}: spec {out.sharding.spec} (want {expected}), "
                                f"activation-sized all-gathers {big}")
            if method in ("vjp", "matmul"):
                continue  # vjp: XLA's own kernel gradient of a spatially sharded lhs-dilated conv all-gathers
            # training: both gradients, the input's keeps the input's sharding, nothing activation-sized gathered
            grads = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1))).lower(ya, wa).compile()
            gy, gw = grads(ya, wa)
            big = [n for n in gathered_sizes(grads.as_text()) if n > w.size]
            if gy.sharding.spec != ys.spec or big:
                failures.append(f"{nd}-D {method} {case} gradients: input gradient spec {gy.sharding.spec} "
                                f"(want {ys.spec}), activation-sized all-gathers {big}")
# grouped, batch sharded: scatter and subpixel (im2col GEMMs batched over groups) gather nothing, gradients included
yg, wg = rng.standard_normal((8, 8, 8, 8)).astype(np.float32), rng.standard_normal((8, 2, 4, 4)).astype(np.float32)
for method in (m for m in only if m in ("scatter", "subpixel", "auto")):
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, stride=2, padding=1, groups=4, method=method))
    ya = jax.device_put(yg, NamedSharding(line, P("sp")))
    compiled = f.lower(ya, wg).compile()
    out = compiled(ya, wg)
    assert_close(out, f(yg, wg), err_msg=f"{method} grouped batch")
    grads = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1))).lower(ya, wg).compile()
    big = [n for n in gathered_sizes(compiled.as_text()) + gathered_sizes(grads.as_text()) if n > wg.size]
    if out.sharding.spec != P("sp") or big:
        failures.append(f"grouped {method} batch: spec {out.sharding.spec}, activation-sized all-gathers {big}")
# channels-last (a Flax layer's layout): the scatter form computes k2 s2 (`blocks_channels_last`) and, in 2-D,
# overlapping taps (k4 s2 p1, `scatter` only: `auto` takes subpixel there) channels-last
yl = rng.standard_normal((8, 8, 8, 4)).astype(np.float32)
nhwc = dict(stride=2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
nhwc_cases = {
    "batch": (NamedSharding(line, P("sp")), NamedSharding(line, P()), P("sp")),
    "spatial": (NamedSharding(line, P(None, "sp")), NamedSharding(line, P()), P(None, "sp")),
    "channel": (NamedSharding(grid, P("data")), NamedSharding(grid, P(None, None, None, "model")),
                P("data", None, None, "model")),
}
nhwc_layers = [((2, 2, 4, 4), {}, ("scatter", "auto")), ((4, 4, 4, 4), dict(padding=1), ("scatter",))]
for (w_shape, extra, methods), method in ((la, m) for la in nhwc_layers for m in only if m in la[2]):
    wl = rng.standard_normal(w_shape).astype(np.float32)
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **nhwc, **extra, method=method))
    for case, (ys, ws, expected) in nhwc_cases.items():
        ya, wa = jax.device_put(yl, ys), jax.device_put(wl, ws)
        compiled = f.lower(ya, wa).compile()
        out = compiled(ya, wa)
        assert_close(out, f(yl, wl), err_msg=f"channels-last {method} {case}")
        grads = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1))).lower(ya, wa).compile()
        gy, gw = grads(ya, wa)
        big = [n for n in gathered_sizes(compiled.as_text()) + gathered_sizes(grads.as_text()) if n > wl.size]
        if out.sharding.spec != expected or gy.sharding.spec != ys.spec or big:
            failures.append(f"channels-last k{w_shape[0]} {method} {case}: spec {out.sharding.spec} (want {expected}), input "
                            f"gradient {gy.sharding.spec} (want {ys.spec}), activation-sized all-gathers {big}")
assert not failures, "\n".join(failures)
print("functions ok")

layer = dict(y_shape=(1, 16, 32, 16, 16), w_shape=(16, 8, 4, 4, 4), kwargs=dict(stride=2, padding=1))
for method in (m for m in only if m != "matmul"):
    ratio = per_device_bytes(method, **layer, devices=8) / per_device_bytes(method, **layer)
    assert ratio <= 0.25, f"{method}: 8-way split on D takes {ratio:.3f} of the unsplit per-device memory"
print("memory ok")

if "vjp" in only:  # the Flax layer, data parallel
    from transconv_jax.nnx import ConvTranspose
    layer = ConvTranspose(4, 6, (4, 3), strides=2, padding=1, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.standard_normal((8, 5, 6, 4)), jnp.float32)
    single = layer(x)
    out = nnx.jit(lambda m, x: m(x))(layer, jax.device_put(x, NamedSharding(grid, P("data"))))
    assert_close(out, single)
    assert out.sharding.spec == P("data"), out.sharding.spec
print("modules ok")

# jax.make_mesh's default axes are Explicit: every reshape of a sharded array needs its output sharding
# spelled out. Batch sharding works for every form (stride 2 and stride 1: the subpixel tap scan too).
# Channel and uneven spatial sharding under Explicit axes are not supported (jax's own conv refuses some).
explicit = jax.make_mesh((8,), ("data",))
# k6 s3: scatter's backward im2col axis by axis (`transposes_by_axis`).
explicit_cases = [(dict(stride=2, padding=1), (6, 4, 4, 4)), (dict(stride=1, padding=1), (6, 4, 3, 3))]
explicit_cases.append((dict(stride=3, padding=1), (6, 4, 6, 6)))
for kwargs, wshape in explicit_cases:
    y = jnp.asarray(rng.standard_normal((8, 6, 8, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(wshape), jnp.float32)
    for method in only:
        f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **kwargs, method=method))
        single = f(y, w)
        with jax.set_mesh(explicit):
            out = f(jax.device_put(y, NamedSharding(explicit, P("data"))), w)
        assert out.sharding.spec == P("data", None, None, None), (method, kwargs, out.sharding.spec)
        assert_close(out, single, err_msg=f"{method} {kwargs} explicit")
        if method == "vjp":
            continue  # the gradients of jax's own conv want an out_sharding under Explicit axes
        loss = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1)))
        with jax.set_mesh(explicit):
            grads = loss(jax.device_put(y, NamedSharding(explicit, P("data"))), w)
        for got, want in zip(grads, loss(y, w)):
            assert_close(got, want, err_msg=f"{method} {kwargs} explicit gradients")
# auto where its gradients would be the vjp form's (a dilated stride-1 layer; k4 s2 with 64 channels): under
# Explicit axes it takes subpixel's instead (`auto_forms(explicit=True)`), so its gradients keep working there.
for kwargs, wshape in [(dict(stride=1, padding=2, dilation=2), (6, 4, 3, 3)), (dict(stride=2, padding=1), (64, 64, 4, 4))]:
    if "auto" not in only:
        break
    y = jnp.asarray(rng.standard_normal((8, wshape[0], 8, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(wshape), jnp.float32)
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **kwargs))
    loss = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1)))
    with jax.set_mesh(explicit):
        grads = loss(jax.device_put(y, NamedSharding(explicit, P("data"))), w)
    assert grads[0].sharding.spec == P("data", None, None, None), (kwargs, grads[0].sharding.spec)
    for got, want in zip(grads, loss(y, w)):
        assert_close(got, want, err_msg=f"auto {kwargs} explicit gradients")
for (w_shape, extra, methods), method in ((la, m) for la in nhwc_layers for m in only if m in la[2]):  # channels-last
    wl = rng.standard_normal(w_shape).astype(np.float32)
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **nhwc, **extra, method=method))
    loss = jax.jit(jax.grad(lambda y, w: (f(y, w) ** 2).sum(), (0, 1)))
    with jax.set_mesh(explicit):
        ya = jax.device_put(yl, NamedSharding(explicit, P("data")))
        out, grads = f(ya, wl), loss(ya, wl)
    assert out.sharding.spec == P("data", None, None, None), (method, w_shape, "channels-last", out.sharding.spec)
    for got, want in zip((out, *grads), (f(yl, wl), *loss(yl, wl))):
        assert_close(got, want, err_msg=f"{method} channels-last explicit")
print("explicit ok")
"""


def run_child(*args: str) -> str:
    """Run `SHARDING_CHILD` over 8 simulated CPU devices; `args[0]` may restrict the methods ('vjp,scatter')."""
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=8")}
    proc = subprocess.run(
        [sys.executable, "-c", SHARDING_CHILD, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("method", [*FORMS, "auto"])
def test_every_form_keeps_batch_spatial_and_channel_sharding(method):
    """One child per method: the suite's longest test, split so that its parts run on both cores."""
    out = run_child(method)
    assert "functions ok" in out and "memory ok" in out and "modules ok" in out and "explicit ok" in out
