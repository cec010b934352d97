"""Strided *and* dilated transposed convolutions on tiny inputs, run in a subprocess.

jax 0.10's XLA:CPU aborts the whole process (a failed CHECK in its algebraic simplifier) on some
of these when they are lowered with `lhs_dilation`. Running them in a child process turns an abort
into a test failure instead of the end of the test run. The child compiles as XLA:CPU does by
default (`oracle.default_codegen_flags`), where a user would meet an abort.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from oracle import default_codegen_flags

from transconv_jax._dispatch import FORMS

CHILD = textwrap.dedent(
    """
    import itertools, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, "tests")
    from oracle import Config, check_against_torch

    method = sys.argv[1]
    count = 0
    # The reported case, then a sweep of its family: stride > 1 and dilation > 1, tiny inputs.
    cases = [Config(1, 1, 1, 1, (2, 3), (4, 2), (3, 2), (1, 1), (0, 0), (2, 1))]
    for n, k, s, d, p in itertools.product((1, 2), (2, 4), (2, 3), (2, 3), (0, 1)):
        cases.append(Config(1, 1, 1, 1, (n, 2), (k, 2), (s, 2), (p, 0), (0, 1), (d, 1)))
        cases.append(Config(1, 2, 1, 2, (n,), (k,), (s,), (p,), (max(s, d) - 1,), (d,)))
    for cfg in cases:
        full = [(a - 1) * s + d * (k - 1) + 1 + op - 2 * p for a, s, d, k, p, op in
                zip(cfg.spatial, cfg.stride, cfg.dilation, cfg.kernel, cfg.padding, cfg.output_padding)]
        if min(full) >= 1:
            check_against_torch(cfg, method)
            count += 1
    print("checked", count)
    """
)


@pytest.mark.parametrize("method", [*FORMS, "auto"])
def test_strided_dilated_family_does_not_abort(method):
    env = {**os.environ, "XLA_FLAGS": default_codegen_flags()}
    proc = subprocess.run([sys.executable, "-c", CHILD, method], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "checked" in proc.stdout and int(proc.stdout.split()[-1]) > 50
