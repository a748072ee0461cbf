"""The include-direction check (scripts/check_layers.py) passes on this tree
and fails on a tree with an include against the declared direction."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CHECK = os.path.join(REPO, "scripts", "check_layers.py")




def run_check(repo):
    return subprocess.run([sys.executable, CHECK, repo], capture_output=True, text=True, timeout=60)


def copy_tree(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "native"), copy / "native")
    shutil.copy(os.path.join(REPO, "CMakeLists.txt"), copy / "CMakeLists.txt")
    return copy


def test_this_tree_passes():
    result = run_check(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lower_stage_including_a_higher_one_fails(tmp_path):
    copy = copy_tree(tmp_path)
    header = copy / "native" / "src" / "model" / "allocator.h"
    header.write_text(header.read_text().replace("#include <cstdint>", '#include <cstdint>\n#include "engine/engine.h"'))
    result = run_check(str(copy))
    assert result.returncode == 1
    assert 'native/src/model/allocator.h: includes "engine/engine.h", but stage model does not depend on engine' \
        in result.stdout


def test_a_folder_that_is_no_stage_and_a_cycle_fail(tmp_path):
    copy = copy_tree(tmp_path)
    (copy / "native" / "src" / "extra").mkdir()
    cmake = copy / "CMakeLists.txt"
    cmake.write_text(cmake.read_text().replace("heapscope_stage(model)", "heapscope_stage(model DEPENDS sink)"))
    result = run_check(str(copy))
    assert result.returncode == 1
    assert "native/src/extra: a folder that is not a declared stage" in result.stdout
    assert "in a circle" in result.stdout


def test_a_public_header_including_the_engine_fails(tmp_path):
    copy = copy_tree(tmp_path)
    header = copy / "native" / "include" / "heapscope" / "heapscope.h"
    header.write_text('#include "store/address_map.h"\n' + header.read_text())
    result = run_check(str(copy))
    assert result.returncode == 1
    assert "a public header includes no engine stage" in result.stdout
