#!/usr/bin/env python3
"""Checks that every #include in native/src runs the declared way.

The stages and what each may depend on are declared once, by the
heapscope_stage(...) calls in CMakeLists.txt. A file in native/src/<stage>/
may include its own stage's headers and those of the stages it DEPENDS on
directly; the public headers (native/include) include nothing of the engine.
The bindings and the tests may include anything.

Usage: check_layers.py [REPO]   (exit 1 and one line per violation)
"""

import os
import re
import sys

STAGE_CALL = re.compile(r"^\s*heapscope_stage\(\s*(\w+)([^)]*)\)", re.MULTILINE)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def declared_stages(cmake_text):
    """{stage: set of stages it may include}, from the heapscope_stage calls."""
    stages = {}
    for name, rest in STAGE_CALL.findall(cmake_text):
        words = rest.split()
        depends = words[words.index("DEPENDS") + 1:] if "DEPENDS" in words else []
        stages[name] = set(depends)
    return stages


def cycle(stages):
    """A dependency cycle among the declarations, as a list, or None."""
    state = {}

    def visit(stage, path):
        if state.get(stage) == "done":
            return None
        if state.get(stage) == "open":
            return path[path.index(stage):] + [stage]
        state[stage] = "open"
        for dependency in sorted(stages.get(stage, ())):
            found = visit(dependency, path + [stage])
            if found:
                return found
        state[stage] = "done"
        return None

    for stage in sorted(stages):
        found = visit(stage, [])
        if found:
            return found
    return None


def violations(repo):
    with open(os.path.join(repo, "CMakeLists.txt"), encoding="utf-8") as cmake:
        stages = declared_stages(cmake.read())
    problems = []
    if not stages:
        return ["CMakeLists.txt declares no heapscope_stage(...)"]
    for stage, depends in sorted(stages.items()):
        for dependency in sorted(depends - set(stages)):
            problems.append(f"CMakeLists.txt: stage {stage} depends on {dependency}, which is not a stage")
    loop = cycle(stages)
    if loop:
        problems.append("CMakeLists.txt: the stages depend on each other in a circle: " + " -> ".join(loop))
    source_root = os.path.join(repo, "native", "src")
    for folder in sorted(os.listdir(source_root)):
        if os.path.isdir(os.path.join(source_root, folder)) and folder not in stages:
            problems.append(f"native/src/{folder}: a folder that is not a declared stage")
    roots = [("native/src", None), ("native/include", "public")]
    for root, kind in roots:
        for directory, _folders, files in os.walk(os.path.join(repo, root)):
            for file_name in sorted(files):
                if not file_name.endswith((".h", ".hpp", ".cpp", ".cc")):
                    continue
                path = os.path.join(directory, file_name)
                relative = os.path.relpath(path, repo)
                parts = os.path.relpath(path, os.path.join(repo, root)).split(os.sep)
                with open(path, encoding="utf-8", errors="replace") as source:
                    text = source.read()
                for included in INCLUDE.findall(text):
                    target = included.split("/")[0] if "/" in included else None
                    if kind == "public":
                        if target in stages:
                            problems.append(f"{relative}: includes \"{included}\": a public header includes no engine stage")
                        continue
                    stage = parts[0]
                    if target is None or target == stage or target not in stages:
                        continue  # a sibling, a system or public header
                    if target not in stages.get(stage, set()):
                        problems.append(f"{relative}: includes \"{included}\", but stage {stage} does not depend on "
                                        f"{target} (CMakeLists.txt)")
    return problems


def main(argv):
    repo = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems = violations(repo)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_layers: {len(problems)} include(s) against the declared direction", file=sys.stderr)
        return 1
    print("check_layers: every include runs the declared way")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
