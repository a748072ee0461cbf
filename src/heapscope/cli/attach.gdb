# heapscope attach: gdb's part (docs/attach.md says why each step is there).
# heapscope/cli/attach.py runs gdb -batch -p PID with, set before this file:
#   $agent    the attach agent library (heapscope_attach_agent.so)
#   $bootstrap the Python source the agent's thread runs (it connects back to heapscope attach)
#   $rtld_now RTLD_NOW
#   $wait_seconds  how long to wait for a safe point
#   $gdb_calls 1 if gdb's own `call` works on this machine (attach.py asked a throwaway process)
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


# Calls made by hand in the stopped thread: only general registers and
# memory are written, and the general registers put back after. gdb's own
# `call` also writes back the vector registers, which gdb 13 cannot do on
# CPUs with AMX (Linux wants their whole XSAVE area at once). Made only at a
# function's entry (a safe point), where the calling convention lets a call
# clobber every vector register. Integer and pointer arguments only.
HEAPSCOPE_SAVED = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
                   "r13", "r14", "r15", "rip", "eflags"]
HEAPSCOPE_ARGUMENTS = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]


def heapscope_read(register):
    return int(gdb.parse_and_eval("$" + register)) & 0xFFFFFFFFFFFFFFFF


def heapscope_write(register, value):
    value &= 0xFFFFFFFFFFFFFFFF
    gdb.execute("set $%s = %d" % (register, value - (1 << 64) if value >> 63 else value))


def heapscope_entry_point():
    """The program's entry point (AT_ENTRY, from the kernel: a stripped
    program has no _start symbol). It runs only at start-up."""
    with open("/proc/%d/auxv" % gdb.selected_inferior().pid, "rb") as auxv:
        data = auxv.read()
    for offset in range(0, len(data) - 15, 16):
        kind = int.from_bytes(data[offset:offset + 8], "little")
        if kind == 9:  # AT_ENTRY
            return int.from_bytes(data[offset + 8:offset + 16], "little")
    raise gdb.GdbError("the process's auxiliary vector has no entry point")


def heapscope_address(symbol):
    return int(gdb.parse_and_eval("(long)&" + symbol))


class HeapscopeCalls:
    def __init__(self):
        self.thread = gdb.selected_thread()
        self.inferior = gdb.selected_inferior()
        self.saved = {register: heapscope_read(register) for register in HEAPSCOPE_SAVED}
        # Arguments are written below the stopped frame's red zone (128
        # bytes), close to it: since Linux 6.5 a debugger's write no longer
        # grows a stack. The calls' own frames go below them.
        self.free = (self.saved["rsp"] - 256) & ~0xF
        # The calls return to the program's entry point, which runs only at
        # start-up (gdb's own calls return there too): the breakpoint there
        # is met by our returns alone.
        self.return_address = heapscope_entry_point()
        self.returned = gdb.Breakpoint("*%d" % self.return_address, internal=True)
        self.returned.silent = True
        # The calls may set errno, which the program may be about to read.
        self.errno_at = self.call(heapscope_address("__errno_location"))
        self.errno = bytes(self.inferior.read_memory(self.errno_at, 4))

    def string(self, data):
        """Writes bytes, NUL-terminated, into the program: their address."""
        data += b"\0"
        self.free = (self.free - len(data)) & ~0xF
        self.inferior.write_memory(self.free, data)
        return self.free

    def read_string(self, address):
        return gdb.Value(address).cast(gdb.lookup_type("char").pointer()).string("utf-8", "replace")

    def call(self, function, *arguments):
        frame = (self.free - 256) & ~0xF
        self.inferior.write_memory(frame - 8, self.return_address.to_bytes(8, "little"))
        for register, value in zip(HEAPSCOPE_ARGUMENTS, arguments):
            heapscope_write(register, value)
        heapscope_write("rax", 0)  # no vector arguments (variadic functions read it)
        heapscope_write("rsp", frame - 8)
        heapscope_write("rip", function)
        while True:
            gdb.execute("continue")
            self.thread.switch()
            if heapscope_read("rip") == self.return_address and heapscope_read("rsp") == frame:
                return heapscope_read("rax")

    def finish(self):
        self.returned.delete()
        self.thread.switch()
        self.inferior.write_memory(self.errno_at, self.errno)
        for register in HEAPSCOPE_SAVED:
            heapscope_write(register, self.saved[register])


def heapscope_load_agent():
    """dlopen the agent and start its thread; says how on HEAPSCOPE: lines."""
    calls = HeapscopeCalls()
    try:
        # gdb decodes with the target's charset: latin-1 gives back the bytes.
        agent = calls.string(gdb.parse_and_eval("$agent").string("latin-1").encode("latin-1"))
        bootstrap = calls.string(gdb.parse_and_eval("$bootstrap").string("latin-1").encode("latin-1"))
        start_name = calls.string(b"heapscope_attach_agent_start")
        handle = calls.call(heapscope_address("dlopen"), agent, int(gdb.parse_and_eval("$rtld_now")))
        if handle == 0:
            error = calls.call(heapscope_address("dlerror"))
            print("HEAPSCOPE: dlopen failed: %s" % (calls.read_string(error) if error else "no reason given"))
            return
        start = calls.call(heapscope_address("dlsym"), handle, start_name)
        if start == 0:
            print("HEAPSCOPE: dlopen failed: the agent has no heapscope_attach_agent_start")
            return
        error = calls.call(start, bootstrap) & 0xFFFFFFFF
        print("HEAPSCOPE: agent started %d" % (error - (1 << 32) if error >> 31 else error))
    finally:
        calls.finish()
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
# Only where gdb's `call` works: a call by hand here, stopped anywhere, could
# clobber vector registers the program still needs.
if $gdb_calls
  if (long)PyGILState_GetThisThreadState() != 0
    call (int)Py_AddPendingCall(&PyCallable_Check, (void*)0)
  end
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
break PyObject_Malloc
break PyObject_Free
break PyErr_CheckSignals
break PyCallable_Check
commands 1-12
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
# gdb's own calls where they work (they put every register back); by hand
# on x86-64 where they do not, or where the probe could not tell.
python gdb.set_convenience_variable("heapscope_by_hand", int(not int(gdb.parse_and_eval("$gdb_calls")) and gdb.selected_frame().architecture().name() == "i386:x86-64"))
if $heapscope_by_hand
  python heapscope_load_agent()
  detach
  quit
end
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
