import os
import sys

import pytest

# Tests import the installed package; running from a checkout without
# installing falls back to src/ (with a built extension linked there).
try:
    import heapscope  # noqa: F401
except ImportError:  # pragma: no cover - developer convenience
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


@pytest.fixture
def hs_tracemalloc():
    """heapscope.tracemalloc, guaranteed stopped after the test."""
    import heapscope.tracemalloc as tm

    yield tm
    tm.stop()
