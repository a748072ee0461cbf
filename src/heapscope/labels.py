"""Labels: a named frame at the root of every stack allocated under it.

``with heapscope.label("load"):`` (or ``@heapscope.label("load")``) makes
every allocation the calling thread makes inside the block start with the
frame ``[label] load`` (file ``<label>``, line 0) in captures and in every
report and export made from them; nested labels give one frame each, the
outer first. Other threads are unaffected. From C,
``heapscope_label_push(name)`` / ``heapscope_label_pop()`` in
``heapscope/heapscope.h`` do the same.

A label costs nothing on the allocation path: the thread's labels become
the root its stacks are interned under, which changes only when a label is
pushed or popped. Labels pushed while no capture runs are kept, and apply
to a capture started later. The ``heapscope.tracemalloc`` door ignores them
(the stdlib's snapshots have no place for them).

As a decorator, on:

- a function: the label holds while it runs;
- a generator function: the label holds while the generator's body runs
  (each ``next``/``send``/``throw`` step), not while its consumer runs
  between steps;
- a coroutine function (``async def``): the label holds while the coroutine
  runs, step by step, so that other tasks the event loop runs while it
  awaits are not labelled;
- an async generator function: the same, for each step.

``with label(...)`` around an ``await`` labels whatever else runs on the
thread until the block ends; in async code, prefer the decorator.
"""

import functools
import inspect

from heapscope import _heapscope

__all__ = ["label"]

_MAX_NAME_BYTES = 4096


class label:
    """A label: a context manager and a decorator (see the module's help)."""

    __slots__ = ("name",)

    def __init__(self, name):
        if not isinstance(name, str):
            raise TypeError(f"a label's name must be a str, not {type(name).__name__}")
        size = len(name.encode("utf-8", "surrogatepass"))
        if not 0 < size <= _MAX_NAME_BYTES:
            raise ValueError(f"a label's name must be 1 to {_MAX_NAME_BYTES} bytes of UTF-8, not {size}")
        self.name = name

    def __repr__(self):
        return f"heapscope.label({self.name!r})"

    def __enter__(self):
        _heapscope.label_push(self.name)
        return self

    def __exit__(self, *exc_info):
        _heapscope.label_pop()
        return False

    def __call__(self, function):
        if not callable(function):
            raise TypeError(f"heapscope.label decorates a function, not {type(function).__name__}")
        name = self.name
        if inspect.isasyncgenfunction(function):
            @functools.wraps(function)
            async def labelled_async_generator(*args, **kwargs):
                inner = function(*args, **kwargs)
                step = inner.asend(None)
                try:
                    while True:
                        try:
                            value = await _LabelledAwaitable(name, step)
                        except StopAsyncIteration:
                            return
                        try:
                            sent = yield value
                        except GeneratorExit:
                            raise
                        except BaseException as error:  # thrown in by the consumer: into the body
                            step = inner.athrow(error)
                        else:
                            step = inner.asend(sent)
                finally:
                    await _LabelledAwaitable(name, inner.aclose())

            return labelled_async_generator
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def labelled_coroutine(*args, **kwargs):
                return await _LabelledAwaitable(name, function(*args, **kwargs))

            return labelled_coroutine
        if inspect.isgeneratorfunction(function):
            @functools.wraps(function)
            def labelled_generator(*args, **kwargs):
                return (yield from _labelled_steps(name, function(*args, **kwargs)))

            return labelled_generator

        @functools.wraps(function)
        def labelled(*args, **kwargs):
            with label(name):
                return function(*args, **kwargs)

        return labelled


def _labelled_steps(name, iterator):
    """Runs a generator (or a coroutine's ``__await__`` iterator) with the label
    pushed during each of its steps only; values, sends, throws and close pass through."""
    native = _heapscope
    to_send = None
    to_throw = None
    while True:
        native.label_push(name)
        try:
            if to_throw is not None:
                error, to_throw = to_throw, None
                value = iterator.throw(error)
            else:
                value = iterator.send(to_send)
        except StopIteration as stop:
            return stop.value
        finally:
            native.label_pop()
        try:
            to_send = yield value
        except GeneratorExit:
            native.label_push(name)
            try:
                iterator.close()
            finally:
                native.label_pop()
            raise
        except BaseException as error:
            to_throw = error


class _LabelledAwaitable:
    __slots__ = ("name", "awaitable")

    def __init__(self, name, awaitable):
        self.name = name
        self.awaitable = awaitable

    def __await__(self):
        return (yield from _labelled_steps(self.name, self.awaitable.__await__()))
