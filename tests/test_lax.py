"""The jax.lax form (lhs dilation, flipped kernel) against PyTorch, values and both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from hypothesis import given
from oracle import HYPOTHESIS, Config, assert_close, configs, torch_conv_transpose

from transconv_jax._lax import conv_transpose_lax_form
from transconv_jax._spec import conv_transpose_spec


def check_lax_form(cfg: Config, seed: int = 0) -> None:
    """The form under `jax.jit`, called on the canonical `Spec`, equals PyTorch with gradients."""
    y, w = map(jnp.asarray, cfg.arrays(seed))
    spec, _ = conv_transpose_spec(y, w, **cfg.kwargs, output_shape=None, dimension_numbers=None, precision=None)
    cot = np.random.default_rng(seed + 1).standard_normal(
        (cfg.batch, cfg.c_out_per_group * cfg.groups, *cfg.out_spatial())
    )
    cot = cot.astype(np.float32)
    out, vjp = jax.vjp(jax.jit(lambda y, w: conv_transpose_lax_form(y, w, spec)), y, w)
    results = (out, *jax.jit(vjp)(jnp.asarray(cot)))
    for name, a, b in zip(("value", "grad y", "grad w"), results, torch_conv_transpose(y, w, cfg, cot), strict=True):
        assert_close(a, b, err_msg=f"{name} of the lax form, {cfg}")


@pytest.mark.parametrize("cfg", oracle.GRID, ids=str)
def test_grid_matches_torch(cfg):
    check_lax_form(cfg)


@HYPOTHESIS
@given(configs())
def test_random_configs_match_torch(cfg):
    check_lax_form(cfg, seed=5)


def test_strided_dilated_family_takes_the_explicit_lowering():
    """No `lhs_dilation` where XLA:CPU aborts (stride > 1 and dilation > 1 on some axis)."""
    cfg = oracle.GRID[5]
    y, w = map(jnp.asarray, cfg.arrays())
    spec, _ = conv_transpose_spec(y, w, **cfg.kwargs, output_shape=None, dimension_numbers=None, precision=None)
    eqns = jax.make_jaxpr(lambda y, w: conv_transpose_lax_form(y, w, spec))(y, w).jaxpr.eqns
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(set(e.params["lhs_dilation"]) == {1} for e in convs)
