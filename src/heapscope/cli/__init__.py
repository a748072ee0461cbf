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

    from heapscope.cli import live, run, stats, summary, top, tree

    top.register(commands)
    run.register(commands)
    summary.register(commands)
    stats.register(commands)
    tree.register(commands)
    live.register(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        return options.handler(parser, options)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `heapscope ... | head` while heapscope itself writes
        return 0
