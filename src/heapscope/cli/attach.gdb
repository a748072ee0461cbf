# heapscope attach: gdb's part (docs/attach.md says why each step is there).
# heapscope/cli/attach.py runs gdb -batch -p PID with, set before this file:
#   $agent    the attach agent library (heapscope_attach_agent.so)
#   $bootstrap the Python source the agent's thread runs (it connects back to heapscope attach)
#   $rtld_now RTLD_NOW
#   $wait_seconds  how long to wait for a safe point
# Lines starting "HEAPSCOPE:" are what heapscope attach reads; gdb stops
# reading this file at the first command that fails, and detaches.

set confirm off
set pagination off
set width 0
set unwindonsignal on
# The program's own signals go to it, untouched, while gdb waits.
handle all nostop noprint pass
handle SIGINT nostop noprint pass

# The timer: a safe point that does not come within $wait_seconds (the
# program is blocked in a system call and runs no Python) ends the wait. It
# sends the target SIGRTMAX (64 on Linux), which gdb stops on and keeps from
# it: that signal is the only one gdb does not pass on while it waits.
handle SIG64 stop print nopass
python
import os
import signal
import threading

import gdb

heapscope_timer = None


def heapscope_start_timer():
    global heapscope_timer
    seconds = float(gdb.parse_and_eval("$wait_seconds"))
    heapscope_timer = threading.Timer(seconds, os.kill, (gdb.selected_inferior().pid, signal.SIGRTMAX))
    heapscope_timer.daemon = True
    heapscope_timer.start()
end

echo HEAPSCOPE: attached\n
sharedlibrary libc
sharedlibrary libdl
sharedlibrary libpython

# Not a CPython (no such symbols): the next lines fail and gdb detaches.
set $heapscope_probe = (long)&PyGILState_Ensure + (long)&Py_AddPendingCall + (long)&PyCallable_Check
echo HEAPSCOPE: cpython\n

# A pending call makes the main thread call PyCallable_Check(NULL) (a no-op)
# at its next safe point between bytecodes: a safe point even for a loop that
# never calls malloc. Asked only from a thread Python knows (3.9-3.11 abort otherwise).
if (long)PyGILState_GetThisThreadState() != 0
  call (int)Py_AddPendingCall(&PyCallable_Check, (void*)0)
end

# The safe points: the entry of an allocator function or of the two above.
# There the thread holds no allocator lock, so the agent can be loaded and
# its thread created. Python itself runs only in that thread, once it has
# taken the GIL the ordinary way.
set $heapscope_safe = 0
break malloc
break calloc
break realloc
break free
break PyMem_Malloc
break PyMem_Calloc
break PyMem_Realloc
break PyMem_Free
break PyErr_CheckSignals
break PyCallable_Check
commands 1-10
  silent
  set $heapscope_safe = 1
end

python heapscope_start_timer()
continue
python heapscope_timer.cancel()
delete breakpoints

if $heapscope_safe == 0
  echo HEAPSCOPE: no safe point\n
  detach
  quit 3
end
echo HEAPSCOPE: safe point\n
set $heapscope_handle = (void*)dlopen($agent, $rtld_now)
if $heapscope_handle == 0
  printf "HEAPSCOPE: dlopen failed: %s\n", (char*)dlerror()
  detach
  quit 4
end
set $heapscope_start = (void*)dlsym($heapscope_handle, "heapscope_attach_agent_start")
set $heapscope_error = ((int(*)(const char*))$heapscope_start)($bootstrap)
printf "HEAPSCOPE: agent started %d\n", $heapscope_error
detach
quit
