"""pixel_shuffle / pixel_unshuffle against PyTorch, and the shared depth-to-space in 1-D to 3-D."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transconv_jax as tc


@pytest.mark.parametrize("shape, r", [((2, 12, 3, 4), 2), ((3, 2, 18, 2, 3), 3), ((8, 5, 5), 2), ((1, 4, 1, 1), 2)])
def test_pixel_shuffle_and_unshuffle_equal_torch(shape, r):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = tc.pixel_shuffle(x, r)
    np.testing.assert_array_equal(out, F.pixel_shuffle(torch.tensor(x), r).numpy())
    np.testing.assert_array_equal(tc.pixel_unshuffle(out, r), F.pixel_unshuffle(torch.tensor(np.asarray(out)), r))
    np.testing.assert_array_equal(tc.pixel_unshuffle(out, r), x)


@pytest.mark.parametrize("factors", [(3,), (2, 3), (2, 1, 3)])
def test_per_axis_factors_are_the_natural_extension(factors):
    """Channel `c * prod(r) + j` becomes phase `j` (row-major) of channel `c`: checked element by element."""
    rows = (2,) * len(factors)
    x = np.random.default_rng(1).standard_normal((2, 3 * int(np.prod(factors)), *rows)).astype(np.float32)
    out = np.asarray(tc.pixel_shuffle(x, factors))
    assert out.shape == (2, 3, *(n * r for n, r in zip(rows, factors)))
    for c in range(3):
        for j, phase in enumerate(np.ndindex(*factors)):
            index = tuple(slice(p, None, r) for p, r in zip(phase, factors))
            np.testing.assert_array_equal(out[(slice(None), c, *index)], x[:, c * int(np.prod(factors)) + j])
    np.testing.assert_array_equal(tc.pixel_unshuffle(out, factors), x)


@pytest.mark.parametrize(
    "f, args, match",
    [
        (tc.pixel_shuffle, ((2, 6, 3, 3), 2), r"input has 6 channels .* must divide into C \* 4"),
        (tc.pixel_unshuffle, ((2, 6, 3, 4), 2), r"spatial shape \(3, 4\); each size must be a multiple"),
        (tc.pixel_shuffle, ((4, 3), 2), r"upscale_factor=2 gives 2 spatial axes, but input has shape \(4, 3\)"),
        (tc.pixel_shuffle, ((4, 3, 3), (1, 2, 2, 2)), r"gives 4 spatial axes"),
    ],
)
def test_errors_name_the_argument(f, args, match):
    with pytest.raises(ValueError, match=match):
        f(np.zeros(args[0], np.float32), args[1])
