import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The command line keeps compiled programs in ~/.cache between runs; the tests' own runs of it
# (subprocesses inherit this) stay hermetic, and the one test of the cache names its folder.
os.environ["SADDLESTEP_CACHE_DIR"] = "off"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A fresh PRNG key on every call (deterministic per test)."""
    counter = iter(range(10**6))
    return lambda: jax.random.PRNGKey(next(counter))


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_cache():
    """Drop each module's compiled executables when it ends: one CI process compiles several
    thousand XLA programs, and keeping them all grew the process until XLA crashed late in the run."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()
