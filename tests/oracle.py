"""Shared test helpers: random valid configurations and PyTorch CPU as the independent oracle."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import transconv_jax as tc
from transconv_jax._spec import conv_transpose_spec, lax_layout

# JAX's own hypothesis settings: reproducible, no deadline, no database.
HYPOTHESIS = settings(
    derandomize=True, deadline=None, database=None, max_examples=25, suppress_health_check=list(HealthCheck)
)

TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def xla_flags(*extra: str) -> str:
    """This process's `XLA_FLAGS` (`tests/conftest.py`'s among them) followed by `extra`, for a
    child process; where a flag is given twice, XLA takes the last."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *extra]).strip()


def default_codegen_flags() -> str:
    """`XLA_FLAGS` for a child process whose XLA:CPU emits its loop fusions as it does by default
    (`tests/conftest.py` turns the fusion emitters off for the suite on jaxlib 0.10). The crash
    guards use it, since they look for an abort where a user would meet it, and so do the scripts
    that count the fusion emitters' kernels."""
    off = "--xla_cpu_use_fusion_emitters" in os.environ.get("XLA_FLAGS", "")
    return xla_flags(*(["--xla_cpu_use_fusion_emitters=true"] if off else []))


@dataclasses.dataclass(frozen=True)
class Config:
    """One transposed convolution: shapes of `y` and `w` and PyTorch's integer arguments."""

    batch: int
    c_in: int
    c_out_per_group: int
    groups: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def y_shape(self):
        return (self.batch, self.c_in, *self.spatial)

    @property
    def w_shape(self):
        return (self.c_in, self.c_out_per_group, *self.kernel)

    @property
    def kwargs(self):
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    def spec(self):
        """The canonical `Spec` that `conv_transpose` builds for these arguments."""
        y, w = jnp.empty(self.y_shape), jnp.empty(self.w_shape)
        none = dict(bias=None, output_shape=None, dimension_numbers=None, precision=None)
        return conv_transpose_spec(y, w, **self.kwargs, **none)[0]

    def out_spatial(self):
        return tc.conv_transpose_output_shape(
            self.spatial, self.kernel, self.stride, self.padding, self.output_padding, self.dilation
        )

    def arrays(self, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        y = rng.standard_normal(self.y_shape).astype(dtype)
        w = rng.standard_normal(self.w_shape).astype(dtype)
        return y, w


# Hand-picked configurations that every form is checked on, values and gradients.
GRID = [
    # batch, c_in, c_out/g, groups, spatial, kernel, stride, padding, output_padding, dilation
    Config(1, 1, 1, 1, (2, 2), (2, 2), (1, 1), (0, 0), (0, 0), (1, 1)),
    Config(2, 3, 2, 1, (5,), (3,), (2,), (1,), (1,), (1,)),
    Config(2, 4, 3, 2, (4, 5), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)),
    Config(1, 6, 1, 6, (3, 4), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),  # depthwise
    Config(1, 2, 2, 1, (3, 3), (3, 3), (1, 1), (2, 2), (0, 0), (2, 2)),  # stride 1, dilated
    Config(1, 1, 1, 1, (2, 3), (4, 2), (3, 2), (1, 1), (0, 0), (2, 1)),  # the XLA:CPU abort case
    Config(1, 1, 1, 1, (3,), (2,), (1,), (0,), (1,), (3,)),  # output_padding >= stride (< dilation)
    Config(1, 2, 2, 2, (2, 3, 2), (2, 3, 2), (2, 1, 3), (0, 1, 1), (1, 0, 2), (1, 2, 1)),
    Config(2, 3, 2, 1, (3, 3, 3), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),  # 3-D U-Net
    Config(1, 2, 3, 1, (4,), (16,), (8,), (4,), (0,), (1,)),  # vocoder-like
]


@st.composite
def configs(draw, ndims=(1, 2, 3), max_size=5):
    """Valid configurations: small shapes, every option, asymmetric per-axis arguments."""
    nd = draw(st.sampled_from(ndims))
    axis = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(nd))  # noqa: E731
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    kernel, stride, dilation = axis(1, 4), axis(1, 3), axis(1, 3)
    spatial = axis(1, max_size if nd < 3 else 3)
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    full = [
        (n - 1) * s + d * (k - 1) + 1 + op for n, s, d, k, op in zip(spatial, stride, dilation, kernel, output_padding)
    ]
    padding = tuple(draw(st.integers(0, max(0, (f - 1) // 2))) for f in full)
    return Config(
        batch=draw(st.integers(1, 2)),
        c_in=groups * draw(st.integers(1, 2)),
        c_out_per_group=draw(st.integers(1, 3)),
        groups=groups,
        spatial=spatial,
        kernel=kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )


def torch_conv_transpose(y, w, cfg: Config, cotangent=None):
    """PyTorch's output, and with a cotangent also its gradients with respect to `y` and `w`."""
    ty = torch.tensor(np.asarray(y), requires_grad=True)
    tw = torch.tensor(np.asarray(w), requires_grad=True)
    out = TORCH_CONV_T[cfg.ndim](ty, tw, **cfg.kwargs)
    if cotangent is None:
        return out.detach().numpy()
    out.backward(torch.tensor(np.asarray(cotangent)))
    return out.detach().numpy(), ty.grad.numpy(), tw.grad.numpy()


def assert_close(actual, expected, rtol=1e-5, err_msg=""):
    """Float32 agreement: relative to the largest magnitude of the expected array."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def to_channels_last(y, w):
    """`y` (or a cotangent) and `w` as the Flax layers hold them: `(N, *spatial, C)` and `(*kernel, I, O)`
    (NumPy or JAX arrays), for `dimension_numbers=lax_layout(nd, channels_last=True)`."""
    nd = y.ndim - 2
    return y.transpose(0, *range(2, 2 + nd), 1), w.transpose(*range(2, 2 + nd), 0, 1)


def check_against_torch(
    cfg: Config, method: str, seed: int = 0, grads: bool = True, channels_last: bool = False, **options
):
    """`conv_transpose(method=..., **options)` under `jax.jit` equals PyTorch in value and, optionally, gradients.

    With `channels_last`, on the arrays as the Flax layers hold them (`(N, *spatial, C)`, a
    `(*kernel, I, O)` kernel, `dimension_numbers=lax_layout(nd, channels_last=True)`); the results
    are moved back to PyTorch's layout to be compared."""
    y, w = cfg.arrays(seed)
    nd = cfg.ndim
    if channels_last:
        options["dimension_numbers"] = lax_layout(nd, channels_last=True)
    f = jax.jit(lambda y, w: tc.conv_transpose(y, w, **cfg.kwargs, method=method, **options))
    to_user = lambda a: to_channels_last(a, w)[0] if channels_last else a  # noqa: E731
    to_torch = lambda a: np.moveaxis(np.asarray(a), -1, 1) if channels_last else a  # noqa: E731
    w_user = to_channels_last(y, w)[1] if channels_last else w
    w_torch = lambda a: np.asarray(a).transpose(nd, nd + 1, *range(nd)) if channels_last else a  # noqa: E731
    if not grads:
        assert_close(to_torch(f(to_user(y), w_user)), torch_conv_transpose(y, w, cfg), err_msg=f"{method} {cfg}")
        return
    cot = np.random.default_rng(seed + 1).standard_normal(
        (cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())
    )
    cot = cot.astype(np.float32)
    out, vjp = jax.vjp(f, jnp.asarray(to_user(y)), jnp.asarray(w_user))
    gy, gw = jax.jit(vjp)(jnp.asarray(to_user(cot)))
    out, gy, gw = to_torch(out), to_torch(gy), w_torch(gw)
    ref, ref_gy, ref_gw = torch_conv_transpose(y, w, cfg, cot)
    for name, a, b in (("value", out, ref), ("grad y", gy, ref_gy), ("grad w", gw, ref_gw)):
        assert_close(a, b, err_msg=f"{name} of method={method} {cfg}")
