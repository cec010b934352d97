"""`python -m transconv_jax demo` runs, every form agrees, and it prints the tutorial's results."""

import subprocess
import sys


def test_demo_prints_the_tutorial_results():
    proc = subprocess.run([sys.executable, "-m", "transconv_jax", "demo"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "[[ 0.  0.  1.]\n     [ 0.  4.  6.]\n     [ 4. 12.  9.]]" in out
    assert "conv_transpose(X, K, padding=1):\n    [[4.]]" in out
    assert "[[0. 0. 0. 1.]\n     [0. 0. 2. 3.]\n     [0. 2. 0. 3.]\n     [4. 6. 6. 9.]]" in out
    assert "same shape as x: True" in out
    assert out.count("True") == 3
    for method in ("vjp", "matmul", "scatter", "subpixel"):
        assert out.count(f"method={method!r}") == 5


def test_unknown_command_is_refused():
    proc = subprocess.run([sys.executable, "-m", "transconv_jax", "nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "transconv_jax", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout and "make bench" in proc.stdout
