// How a forked test child ends.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

// Ends a forked child with `code` at once, as _exit does. Under
// ThreadSanitizer, _exit first runs TSan's exit checks, which take the
// parent's threads (in the child's copy of TSan's bookkeeping, but not in
// the child) for leaked threads and turn exit code 0 into 66. The TSan
// build halts at its first report (TSAN_OPTIONS in CMakeLists.txt), so a
// race in the child has already ended it: nothing is lost by skipping them.
[[noreturn]] inline void end_child(int code) {
#if defined(__SANITIZE_THREAD__)
    ::syscall(SYS_exit_group, code);
    __builtin_unreachable();
#else
    ::_exit(code);
#endif
}
