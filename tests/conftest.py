"""Strict JAX settings for the whole suite, as in JAX's own tests, and XLA:CPU's fast compile settings.

The suite's arrays are tiny, so its time is mostly XLA's compile. Two flags cut it; XLA runs the
same HLO passes under both (the XLA:CPU abort of `tests/test_xla_hazard.py` is in one of them, and
the canary in `tests/test_accelerators.py` still sees it) and compiles the same ops into slower code
(DCGAN 16x16's optimized fwd+bwd differed in one copy, not wrapped in a fusion of its own):
- `--xla_backend_optimization_level=0` skips LLVM's optimization of the code XLA generates;
- `--xla_cpu_use_fusion_emitters=false` emits the loop fusions (pads, slices, copies) with XLA's
  older emitter, whose compile is much faster on such small programs (BENCHMARKS.md, "XLA:CPU's
  older fusion emitter", has the suite's times with and without it).
Set here, before JAX starts, they hold in this process and in the child processes and notebook
kernels the suite starts (they inherit the environment; `tests/test_sharding.py` adds its own flag
to them). The children that must compile as XLA:CPU does by default, the crash guards and the
scripts that count the fusion emitters' kernels, turn the emitters back on
(`oracle.default_codegen_flags`). `make bench`, the other scripts and users are not affected.
"""

import importlib.metadata
import os

# XLA aborts on a flag it does not know, so the emitter's is given only to the jaxlib it was tried on.
JAXLIB = tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
FLAGS = ("--xla_backend_optimization_level=0", *(("--xla_cpu_use_fusion_emitters=false",) if JAXLIB == (0, 10) else ()))
for flag in FLAGS:
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

import jax  # noqa: E402
import torch  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The longest tests first: each runs a family of layers in a child process, and the notebooks
    take as long. A parallel run (`make test`'s `-n 2`) then ends on short tests on both cores
    instead of one long test on one of them."""
    first = ("tests/test_xla_hazard.py", "tests/test_sharding.py", "notebooks/")
    items.sort(key=lambda item: not item.nodeid.startswith(first))
