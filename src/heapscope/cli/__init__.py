"""The ``heapscope`` command line (also ``python -m heapscope``)."""

import argparse

from heapscope import __version__


def build_parser():
    parser = argparse.ArgumentParser(
        prog="heapscope",
        description="heapscope: a memory profiler for Python programs, with a C++ core.",
    )
    parser.add_argument("--version", action="version", version=f"heapscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    from heapscope.cli import attach, diff, flamegraph, live, merge, parse, run, stats, summary, table, top, transform, tree

    top.register(commands)
    run.register(commands)
    summary.register(commands)
    stats.register(commands)
    tree.register(commands)
    flamegraph.register(commands)
    table.register(commands)
    diff.register(commands)
    transform.register(commands)
    merge.register(commands)
    live.register(commands)
    parse.register(commands)
    attach.register(commands)
    return parser


def main(argv=None):
    import sys

    from heapscope.cli._program import bare_sample_flags

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    if argv and argv[0] in ("run", "top"):
        argv[1:] = bare_sample_flags(argv[1:], commands.choices[argv[0]])
    options = parser.parse_args(argv)
    try:
        return options.handler(parser, options)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `heapscope ... | head` while heapscope itself writes
        return 0
