"""The benchmark scripts run end to end on tiny layers: `benchmarks/bench.py --quick` and `benchmarks/gpu.sh --dry-run`."""

import os
import pathlib
import subprocess
import sys
import types

import pytest
from oracle import default_codegen_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(cmd, **env):
    """Run from the repository root with this checkout first on the path (as `PYTHONPATH=.` does)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _rounding(*cells):
    """How far arithmetic on cells printed to 3 significant figures may miss: half a unit in each one's third."""
    return sum(0.005 * abs(cell) for cell in cells)


def test_bench_quick_writes_the_markdown_table(tmp_path):
    _run([sys.executable, "benchmarks/bench.py", "--quick", "--only", "2-D", "--out", str(tmp_path)])
    table = (tmp_path / "bench.md").read_text()
    assert "load average" in table and "Values checked before timing" in table
    for name in (
        "auto",
        "vjp",
        "scatter",
        "subpixel",
        "torch",
        "jax.lax",
        "flax",
        "/ jax.lax fwd+bwd",
        "/ pick fwd+bwd",
    ):
        assert f"| {name} |" in table or f" {name} |" in table, name
    assert "DCGAN generator" in table and "WRONG" not in table
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_names_the_process_wide_settings_it_ran_under(monkeypatch):
    """XLA's flags and glibc's malloc settings move XLA:CPU's times: the report says which were set."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    for key in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    line = bench._machine_line({"rounds": 3, "sgemm": 100.0}, ["--quick"])
    assert "default threads" in line and "malloc" not in line, line
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1073741824")
    line = bench._machine_line({"rounds": 3, "sgemm": 100.0}, ["--quick"])
    assert "XLA_FLAGS='--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'" in line, line
    assert "glibc malloc: MALLOC_MMAP_THRESHOLD_=1073741824;" in line, line


def test_gpu_dry_run_writes_a_table_with_every_contender(tmp_path):
    _run(["bash", "benchmarks/gpu.sh", "--dry-run"], OUT=str(tmp_path), PYTHON=sys.executable)
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "Dry run" in table
    header = "| layer | auto | vjp | matmul | scatter | subpixel | auto N*C | jax.lax | torch | auto / jax.lax |"
    for dtype in ("float32", "bfloat16"):
        for phase in ("forward", "forward + backward", "memory of one forward + backward"):
            assert f"**{dtype}, {phase}**" in table
    assert table.count(header) == 4
    rows = [line for line in table.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 6 and all(row.count("|") == (11 if i % 3 < 2 else 10) for i, row in enumerate(rows))
    float32_times = rows[:2]  # every contender checked against PyTorch and timed (bfloat16 may flag one WRONG)
    assert all("WRONG" not in row and "n/a" not in row for row in float32_times)


def test_derivatives_quick_prints_both_tables():
    out = _run([sys.executable, "benchmarks/derivatives.py", "--quick"]).stdout
    assert out.count("| tiny") == 6 and "| layer | auto | forward form alone | mixed |" in out
    assert "load average" in out


def test_profile_layer_lists_the_compiled_ops_with_their_shapes():
    out = _run([sys.executable, "benchmarks/profile_layer.py", "tiny 2-D", "--top", "4"]).stdout
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert 1 <= len(rows) <= 4 and any("f32[" in row for row in rows), out


def test_col2im_transpose_quick_times_both_variants():
    out = _run([sys.executable, "benchmarks/col2im_transpose.py", "--quick"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.endswith("| by axis |") for row in rows), out  # small layers: k4 s2, k3 s2
    assert "load average" in out


def test_profile_layer_splits_compile_time():
    out = _run([sys.executable, "benchmarks/profile_layer.py", "tiny 2-D", "--compile"]).stdout
    rows = [line for line in out.splitlines() if line.startswith(("| auto", "| jax.lax"))]
    assert len(rows) == 6 and all(float(row.split("|")[4]) > 0 for row in rows), out


@pytest.mark.parametrize("extra", [[], ["--bias-relu"]])
def test_profile_layer_splits_xla_compile_by_phase(extra):
    out = _run(
        [sys.executable, "benchmarks/profile_layer.py", "tiny 2-D", "--codegen", *extra],
        XLA_FLAGS=default_codegen_flags(),
    ).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| auto", "| jax.lax"))]
    assert len(rows) == 2 and ("with a bias and a ReLU" in out) == bool(extra), out
    for _, compile_s, codegen, thunks, kernels, ops, largest in rows:
        assert 0 < float(codegen) and 0 < float(thunks) and float(codegen) + float(thunks) < float(compile_s), out
        assert 0 < int(kernels) and int(largest.split()[0]) <= int(ops), out


def test_profile_layer_splits_the_im2col_compile_by_rank():
    out = _run(
        [sys.executable, "benchmarks/profile_layer.py", "tiny 2-D", "--im2col"], XLA_FLAGS=default_codegen_flags()
    ).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| four axes", "| the columns"))]
    assert len(rows) == 2, out
    for _, compile_s, codegen, kernels, ops, largest in rows:
        assert 0 < float(codegen) < float(compile_s) and 0 < int(kernels) and int(largest.split()[0]) <= int(ops), out
    assert rows[0][3:] != rows[1][3:], f"the two ranks compiled the same kernels: {out}"


def test_channels_last_quick_checks_and_times_each_layer():
    out = _run([sys.executable, "benchmarks/channels_last.py", "--quick"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 3 and "| tiny 2-D k2 s2 |" in out and all(row.count("|") == 12 for row in rows), out
    assert "load average" in out


@pytest.mark.parametrize(("option", "layout"), [("--channels-last", "channels-last"), ("--loss", "in a loss")])
def test_ab_quick_compares_with_a_revision(option, layout):
    out = _run([sys.executable, "benchmarks/ab.py", "HEAD", "--quick", option]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.count("|") == 10 for row in rows), out
    assert "against HEAD (old), " in out and layout in out and "load average" in out


def test_in_a_loss_differentiates_half_the_squared_distance_to_the_target():
    """`suite.in_a_loss`: the gradients of `0.5 * sum((f - target) ** 2)`, i.e. the vjp of `f` with
    the cotangent `f - target`, which depends on the forward."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import jax.numpy as jnp
    import suite

    f = lambda y, w: y * w  # noqa: E731
    y, w, target = jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0]), jnp.array([0.5, 0.0])
    loss, gy, gw = suite.in_a_loss(f)(y, w, target)
    cotangent = f(y, w) - target
    assert float(loss) == 0.5 * float(jnp.sum(cotangent**2))
    assert jnp.array_equal(gy, cotangent * w) and jnp.array_equal(gw, cotangent * y)


@pytest.mark.parametrize(
    ("option", "header"), [("--compile", "fwd+bwd compile old"), ("--memory", "XLA temp old, MiB")]
)
def test_ab_quick_compares_compile_times_and_memory(option, header):
    out = _run([sys.executable, "benchmarks/ab.py", "HEAD", "--quick", option]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.count("|") == 5 for row in rows), out
    for row in rows:
        old, new, ratio = (float(cell.strip().rstrip("x")) for cell in row.split("|")[2:5])
        # Figures to 3 significant figures (each off by up to 0.5%), the ratio to 2 decimals.
        assert old > 0 and new > 0 and abs(new / old - ratio) <= 0.011 * ratio + 0.005, row
    assert header in out


@pytest.mark.parametrize("option", ["--timing", "--compile"])
def test_ab_quick_generator_adds_the_model_as_a_row(option):
    argv = ["benchmarks/ab.py", "HEAD", "--quick", "--generator", *([option] if option == "--compile" else [])]
    out = _run([sys.executable, *argv]).stdout
    (row,) = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| the generator")]
    old, new, ratio = (float(cell.strip().rstrip("x")) for cell in row[-3:])
    assert old > 0 and new > 0 and abs(new / old - ratio) <= 0.011 * ratio + 0.005, out
    assert ("compile + first call" in row[0]) == (option == "--compile"), out
    assert option == "--compile" or row[5].strip() in ("same", "same ops", "differ"), out


def test_ab_quick_traces_with_a_revision_and_compares_its_programs():
    out = _run([sys.executable, "benchmarks/ab.py", "HEAD", "--quick", "--trace", "--repeat", "2"]).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and "The layer 2 times in one step" in out and "load average" in out, out
    for _, programs, *cells in rows:
        old, new, ratio = (float(cell.strip().rstrip("x")) for cell in cells)
        assert programs.strip() in ("same", "same ops", "differ") and old > 0 and new > 0, out
        assert abs(new / old - ratio) <= 0.011 * ratio + 0.005, out  # 3 significant figures, the ratio to 2 decimals


def test_ab_program_text_ignores_instruction_names_and_metadata_but_not_ops():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ab

    def program(*body):
        text = "\n".join(["ENTRY %main.9 (p.1: f32[2]) -> f32[2] {", *body, "}"])
        return ab.program_text(types.SimpleNamespace(as_text=lambda: text))

    a = program("  %p.1 = f32[2] parameter(0)", '  ROOT %sine.7 = f32[2] sine(%p.1), metadata={op_name="a"}')
    renamed = program("  %p.3 = f32[2] parameter(0)", '  ROOT %sine.2 = f32[2] sine(%p.3), metadata={op_name="b"}')
    other = program("  %p.1 = f32[2] parameter(0)", "  ROOT %cosine.7 = f32[2] cosine(%p.1)")
    two = ["  %p.1 = f32[2] parameter(0)", "  %a.2 = f32[2] sine(%p.1)", "  %b.3 = f32[2] cosine(%p.1)"]
    swapped = [two[0], two[2], two[1]]
    assert a == renamed and ab.same_programs(renamed, a) == "same"
    assert ab.same_programs(other, a) == "differ"
    assert ab.same_programs(program(*swapped), program(*two)) == "same ops"


def test_gemm_layouts_quick_times_each_layout():
    out = _run([sys.executable, "benchmarks/gemm_layouts.py", "--quick"]).stdout
    (row,) = [line for line in out.splitlines() if line.startswith("| tiny")]
    cells = row.split("|")[3:7]
    assert len(cells) == 4 and all(float(c.split()[0]) > 0 for c in cells), out
    assert "rows minor | a minor | b minor | rows major" in out and "load average" in out


def test_movement_quick_splits_each_layer():
    out = _run([sys.executable, "benchmarks/movement.py", "--quick"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.count("|") == 9 for row in rows), out
    for row in rows:
        wall, moved, products = (float(cell.split()[0]) for cell in row.split("|")[2:5])
        # Movement is profiled in its own calls, so on a noisy machine it may exceed the wall time: only its sign is fixed.
        assert moved > 0 and abs(wall - moved - products) <= _rounding(wall, moved, products), row
    assert "ops one after another" in out and "load average" in out


@pytest.mark.parametrize(
    ("option", "name"), [("--heap", "heap"), ("--eigen", "Eigen"), ("--older-emitter", "older emitter")]
)
def test_scheduler_quick_times_auto_and_torch_in_child_processes_of_each_setting(option, name):
    """`--heap` counts `auto`'s page faults per call, the others the convolutions YNNPACK runs in
    its program (with `--eigen` none, which takes them all from YNNPACK)."""
    out = _run([sys.executable, "benchmarks/scheduler.py", "--quick", "--only", "tiny 2-D", option]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1 and all(row.count("|") == 11 for row in rows), out
    for row in rows:
        default, other, ratio, counted, other_counted, torch, torch_other, auto_torch, other_torch = (
            float(cell.strip().rstrip("x")) for cell in row.split("|")[2:11]
        )
        assert counted >= 0 and other_counted >= 0 and (option != "--eigen" or other_counted == 0), row
        # Times to 3 significant figures (each off by up to 0.5%), ratios to 2 decimals.
        for value, want in (
            (ratio, other / default),
            (auto_torch, default / torch),
            (other_torch, other / torch_other),
        ):
            assert abs(want - value) <= 0.011 * value + 0.005, row
    assert f"| {name} / default |" in out


def test_scheduler_quick_times_both_schedulers_in_child_processes():
    out = _run([sys.executable, "benchmarks/scheduler.py", "--quick", "--only", "tiny 2-D"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1, out
    for row in rows:
        default, sequential, ratio = (cell.strip() for cell in row.split("|")[2:5])
        default, sequential, ratio = float(default), float(sequential), float(ratio.rstrip("x"))
        # Each time within 0.5% of its value, the ratio printed to 0.01.
        assert abs(sequential / default - ratio) <= 2 * _rounding(ratio) + 0.005, row
    assert "load average" in out


def test_ynn_convolutions_counts_the_convolutions_ynnpack_runs():
    """jax 0.10's XLA:CPU hands a 2-D float32 convolution with more than 16 channels to YNNPACK, but
    not one of 16 channels, nor a dot (a `__ynn_fusion` too) to this count."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import jax
    import jax.numpy as jnp
    import suite

    def hlo(f, *shapes):
        return jax.jit(f).lower(*(jnp.ones(s) for s in shapes)).compile().as_text()

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert suite.ynn_convolutions(hlo(conv, (2, 8, 8, 32), (3, 3, 32, 32))) == 1
    assert suite.ynn_convolutions(hlo(conv, (2, 8, 8, 16), (3, 3, 16, 16))) == 0
    two = hlo(lambda x, w: conv(conv(x, w), w), (2, 8, 8, 32), (3, 3, 32, 32))
    assert suite.ynn_convolutions(two) == 2
    dot = hlo(jnp.matmul, (64, 64), (64, 64))
    assert "__ynn_fusion" in dot and suite.ynn_convolutions(dot) == 0


def test_temp_faults_quick_counts_a_fault_per_page_past_32_mib():
    out = _run([sys.executable, "benchmarks/temp_faults.py", "--quick"]).stdout
    rows = [[float(c) for c in line.split("|")[1:4]] for line in out.splitlines() if line[:3].strip("| ").isdigit()]
    assert [round(temp) for temp, _, _ in rows] == [16, 40], out  # XLA's temp buffers as asked
    temp, faults, pages = rows[1]
    assert pages == temp * 256, out
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # glibc's default: past 32 MiB a fresh mapping on every call
        assert faults >= 0.9 * pages, out
    assert "load average" in out


def test_loss_step_quick_checks_and_times_auto_and_torch():
    out = _run([sys.executable, "benchmarks/loss_step.py", "--quick"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.count("|") == 6 for row in rows), out
    for row in rows:
        check, auto, torch, ratio = (float(cell.strip().rstrip("x")) for cell in row.split("|")[2:6])
        assert check <= 1e-4 and abs(auto / torch - ratio) <= 0.011 * ratio + 0.005, row
    assert "geomean" in out and "load average" in out


def test_models_quick_checks_and_times_both_decoders():
    out = _run([sys.executable, "benchmarks/models.py", "--quick"]).stdout
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and all(row.count("|") == 12 for row in rows), out
    assert all(float(row.split("|")[2]) <= 1e-4 for row in rows), out  # auto and Flax's layer agree
    assert "load average" in out
