"""Put first on PYTHONPATH by a traced parent (heapscope._follow): follows
this process if it is one to follow, then runs the sitecustomize that was
next on the path, if any."""


def _follow():
    try:
        from heapscope._follow import start_in_child
    except ImportError:  # another Python, without heapscope
        return
    start_in_child()


def _chain():
    import importlib
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    this = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
        importlib.import_module("sitecustomize")
    except ImportError:
        if this is not None:
            sys.modules["sitecustomize"] = this
    finally:
        sys.path[:] = saved


_follow()
_chain()
