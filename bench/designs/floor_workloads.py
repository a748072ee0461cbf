"""What the floor benchmarks of bench/designs share: the call patterns they
time, and the build of their small C extension."""

import importlib.util
import os
import subprocess
import sysconfig


def build_extension(name, directory, flags=()):
    """Compiles bench/designs/NAME.c into *directory* and imports it."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".c")
    target = os.path.join(directory, name + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", *flags, "-I", include, source, "-o", target], check=True)
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add(a, b):
    return a + b


def call_heavy(n):
    total = 0
    for i in range(n):
        total = add(total, i)
        total = add(total, 1)
    return total


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def numbers(n):
    yield from range(n)


def generators(n):
    return sum(numbers(n))
