"""`python -m transconv_jax demo`: the tutorial's examples, each computed by every form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _dispatch
from ._conv import conv
from ._matmul import conv_matrix


def trans_conv_by_hand(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The definition, as a loop: each input element times the kernel, added into the output."""
    (n_h, n_w), (k_h, k_w) = x.shape, k.shape
    out = np.zeros((n_h + k_h - 1, n_w + k_w - 1), x.dtype)
    for i in range(n_h):
        for j in range(n_w):
            out[i : i + k_h, j : j + k_w] += x[i, j] * k
    return out


def every_form(y, w, **kwargs) -> np.ndarray:
    """Run `conv_transpose` with each method, check that they agree, and print a line per method.

    In full float32 precision: on a GPU, float32 convolutions and products run in TF32 by default
    (about 3 decimal digits), and the forms would then differ by more than this check allows.
    """
    with jax.default_matmul_precision("highest"):
        results = {m: np.asarray(_dispatch.conv_transpose(y, w, method=m, **kwargs)) for m in _dispatch.FORMS}
    first = next(iter(results.values()))
    for method, out in results.items():
        gap = float(np.abs(out - first).max())
        print(f"    method={method!r:<11} shape {out.shape}, max |difference| from 'vjp': {gap:.1e}")
        if not np.allclose(out, first, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(first).max()))):
            raise SystemExit(f"method={method!r} disagrees with method='vjp'")
    return first


def _show(title: str, array) -> None:
    print(f"\n{title}")
    text = np.array2string(np.asarray(array), precision=4, suppress_small=True)
    print("\n".join("    " + line for line in text.splitlines()))


def main(argv: list[str] | None = None) -> int:
    del argv
    np.set_printoptions(precision=4, suppress=True)
    print(f"transconv_jax demo on {jax.default_backend()} (jax {jax.__version__})")
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    k = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    x4, k4 = x.reshape(1, 1, 2, 2), k.reshape(1, 1, 2, 2)

    print("\n1. The basic operation: a 2x2 input and a 2x2 kernel give a 3x3 output.")
    _show("  by hand (a loop that adds x[i, j] * K into the output):", trans_conv_by_hand(x, k))
    _show("  conv_transpose(X, K):", every_form(x4, k4)[0, 0])

    print("\n2. Padding crops the output: padding=1 removes the first and last row and column.")
    _show("  conv_transpose(X, K, padding=1):", every_form(x4, k4, padding=1)[0, 0])

    print("\n3. Stride spaces the kernel-sized patches out: stride=2 gives a 4x4 output.")
    _show("  conv_transpose(X, K, stride=2):", every_form(x4, k4, stride=2)[0, 0])

    print("\n4. Multiple channels: a conv and its transposed conv with the same hyper-parameters.")
    rng = np.random.default_rng(0)
    xs = rng.random((1, 10, 16, 16), np.float32)
    w = rng.standard_normal((20, 10, 5, 5)).astype(np.float32)
    ys = conv(xs, w, stride=3, padding=2)
    print(f"    x {xs.shape} -> conv(k=5, padding=2, stride=3) -> {ys.shape}")
    back = every_form(ys, w, stride=3, padding=2)
    print(f"    -> conv_transpose with the same weight -> {back.shape}; same shape as x: {back.shape == xs.shape}")

    print("\n5. Why 'transposed': the conv is a matrix W, the transposed conv multiplies by W.T.")
    x9 = np.arange(9.0, dtype=np.float32).reshape(1, 1, 3, 3)
    kk = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    y = conv(x9, kk)
    W = conv_matrix(kk, (1, 3, 3))
    _show("  Y = conv(X, K) for X = arange(9).reshape(3, 3), K = [[1, 2], [3, 4]]:", y[0, 0])
    _show("  W = conv_matrix(K, (1, 3, 3)), a 4x9 matrix:", W)
    print(f"    W @ X.ravel() == Y.ravel(): {bool(jnp.allclose(W @ x9.ravel(), y.ravel()))}")
    z = every_form(y, kk)
    same = np.allclose((W.T @ y.ravel()).reshape(3, 3), z[0, 0])
    print(f"    W.T @ Y.ravel() == conv_transpose(Y, K).ravel(): {same}")
    _show("  conv_transpose(Y, K), which is not X (W.T is not the inverse of W):", z[0, 0])
    return 0
