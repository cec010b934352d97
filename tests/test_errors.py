"""Every bad argument gets a ValueError or TypeError that names it, before anything is traced."""

import jax.numpy as jnp
import numpy as np
import pytest

import transconv_jax as tc

Y = jnp.ones((1, 4, 5, 5))
W = jnp.ones((4, 3, 3, 3))  # (C_in, C_out // groups, kh, kw)

BAD_CONV_TRANSPOSE = [
    # (args, kwargs, exception, message pattern)
    ((Y, jnp.ones((5, 3, 3, 3))), {}, ValueError, r"input has 4 channels but weight has shape \(5, 3, 3, 3\)"),
    ((Y, W), {"groups": 3}, ValueError, r"groups=3 must divide the 4 input channels"),
    ((Y, W), {"groups": 0}, ValueError, r"groups=0 must be a positive integer"),
    ((Y, W), {"stride": 2, "output_padding": 2}, ValueError, r"output_padding=2 must be smaller than the stride"),
    ((Y, W), {"stride": (1, 2), "dilation": (2, 1), "output_padding": (0, 2)}, ValueError, r"output_padding=\(0, 2\)"),
    ((Y, W), {"stride": 0}, ValueError, r"stride=0: every entry must be >= 1"),
    ((Y, W), {"dilation": (1, 0)}, ValueError, r"dilation=\(1, 0\): every entry must be >= 1"),
    ((Y, W), {"padding": -1}, ValueError, r"padding=-1 must not be negative"),
    ((Y, W), {"padding": 4}, ValueError, r"output would have spatial shape \(-1, -1\)"),
    (
        (jnp.ones((4, 5)), jnp.ones((4, 3))),
        {},
        ValueError,
        r"weight has shape \(4, 3\) \(rank 2\); it must have rank 3",
    ),
    # a 1-D kernel for a 2-D input: the message names both ranks the kernel allows and the kernel's dimensionality
    ((Y, jnp.ones((4, 3, 3))), {}, ValueError, r"input must have rank 3 \(batch, channels, \*spatial\) or 2"),
    ((jnp.ones((1, 1, 4, 5, 5)), W), {}, ValueError, r"a 2-D kernel; input must have rank 4 .* or 3 \(channels"),
    ((Y, W), {"bias": jnp.ones(4)}, ValueError, r"bias has shape \(4,\); it must be \(3,\)"),
    ((Y, W), {"bias": jnp.ones(3, jnp.bfloat16)}, TypeError, r"bias has dtype bfloat16 but input has dtype float32"),
    ((Y, W), {"stride": (1, 2, 3)}, ValueError, r"stride=\(1, 2, 3\) has 3 entries but there are 2 spatial axes"),
    ((Y, W), {"padding": (1, 1, 1)}, ValueError, r"padding=\(1, 1, 1\) has 3 entries"),
    ((Y, W), {"stride": 1.5}, TypeError, r"stride=1.5 must be an int or a tuple of ints"),
    ((Y, W), {"stride": True}, TypeError, r"stride=True must be an int"),
    ((jnp.ones((1, 4, 5, 5), jnp.int32), W), {}, TypeError, r"input has dtype int32; integer or bool dtypes"),
    ((Y, jnp.ones((4, 3, 3, 3), bool)), {}, TypeError, r"weight has dtype bool; integer or bool dtypes"),
    ((Y.astype(jnp.complex64), W.astype(jnp.complex64)), {}, TypeError, r"complex dtypes are not supported"),
    ((Y, W.astype(jnp.bfloat16)), {}, TypeError, r"input has dtype float32 but weight has dtype bfloat16"),
    ((Y, jnp.ones((4, 3, 0, 3))), {}, ValueError, r"no axis may be empty"),
    ((Y, W), {"method": "fft"}, ValueError, r"method='fft' is not one of"),
    ((Y, W), {"stride": 2, "output_shape": (13, 11)}, ValueError, r"reachable sizes per axis are 11\.\.12, 11\.\.12"),
    ((Y, W), {"output_shape": (7, 7), "output_padding": 1, "stride": 2}, ValueError, r"output_shape or output_padding"),
    ((Y, W), {"padding": "FULL"}, ValueError, r"padding='FULL' must be an int, a tuple of ints, 'SAME' or 'VALID'"),
    ((Y, W), {"dimension_numbers": ("NHWC", "HWIO")}, TypeError, r"must be three layout strings"),
    ((Y, W), {"dimension_numbers": ("NHWC", "HWXO", "NHWC")}, ValueError, r"is not a valid lax layout"),
    (([1, 2], W), {}, ValueError, r"input must have rank 4 .* or 3"),
]


@pytest.mark.parametrize("args,kwargs,exc,match", BAD_CONV_TRANSPOSE, ids=lambda v: str(v)[:40])
def test_conv_transpose_rejects(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tc.conv_transpose(*args, **kwargs)


BAD_CONV = [
    ((Y, jnp.ones((3, 5, 3, 3))), {}, ValueError, r"input has 4 channels but weight has shape \(3, 5, 3, 3\)"),
    ((Y, jnp.ones((3, 2, 3, 3))), {"groups": 2}, ValueError, r"groups=2 must divide the 3 output channels"),
    ((Y, jnp.ones((3, 4, 7, 7))), {}, ValueError, r"convolution output would have spatial shape \(-1, -1\)"),
    ((Y, jnp.ones((3, 4, 3, 3))), {"padding": "SAME_UPPER"}, ValueError, r"padding='SAME_UPPER'"),
    ((Y, jnp.ones((3, 4, 3, 3))), {"stride": -1}, ValueError, r"stride=-1: every entry must be >= 1"),
]


@pytest.mark.parametrize("args,kwargs,exc,match", BAD_CONV, ids=lambda v: str(v)[:40])
def test_conv_rejects(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tc.conv(*args, **kwargs)


def test_shape_helpers_reject():
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3, 3\) has 3 entries"):
        tc.conv_transpose_output_shape((4, 4), (3, 3, 3))
    with pytest.raises(ValueError, match="output_padding=3 must be smaller"):
        tc.conv_transpose_output_shape((4,), 3, stride=2, output_padding=3)


def test_errors_raise_before_tracing():
    """A bad argument is refused even when the arrays are abstract (inside jit or eval_shape)."""
    import jax

    with pytest.raises(ValueError, match="groups=3"):
        jax.eval_shape(lambda y, w: tc.conv_transpose(y, w, groups=3), Y, W)


def test_empty_batch_is_valid():
    out = tc.conv_transpose(np.ones((0, 4, 5, 5), np.float32), W, stride=2)
    assert out.shape == (0, 3, 11, 11)
