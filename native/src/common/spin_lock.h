// A tiny test-and-test-and-set lock for the allocation hot path.
//
// Why not std::mutex: the critical sections are a few dozen nanoseconds, and
// pthread mutexes cost a function call plus futex bookkeeping. This lock never
// allocates and never calls back into Python, so it is safe to take inside an
// allocator hook. It is not recursive: the hooks' re-entrancy guard ensures a
// thread never asks for it twice.
#pragma once

#include <atomic>
#include <sched.h>

namespace heapscope {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

class SpinLock {
  public:
    // Uncontended (nearly always): one exchange, inline.
    void lock() noexcept {
        if (!locked_.exchange(true, std::memory_order_acquire)) [[likely]] return;
        lock_contended();
    }
    bool try_lock() noexcept { return !locked_.exchange(true, std::memory_order_acquire); }
    void unlock() noexcept { locked_.store(false, std::memory_order_release); }
    // Only for a fork child, where the thread that held the lock no longer exists.
    void reset_after_fork() noexcept { locked_.store(false, std::memory_order_relaxed); }

  private:
    __attribute__((noinline)) void lock_contended() noexcept {
        for (int spins = 0;; ++spins) {
            if (!locked_.exchange(true, std::memory_order_acquire)) return;
            while (locked_.load(std::memory_order_relaxed)) {
                if (spins < 64) {
                    cpu_relax();
                    ++spins;
                } else {
                    sched_yield();  // the holder may be descheduled: give it the core
                }
            }
        }
    }

    std::atomic<bool> locked_{false};
};

class SpinGuard {
  public:
    explicit SpinGuard(SpinLock& lock) noexcept : lock_(lock) { lock_.lock(); }
    ~SpinGuard() { lock_.unlock(); }
    SpinGuard(const SpinGuard&) = delete;
    SpinGuard& operator=(const SpinGuard&) = delete;

  private:
    SpinLock& lock_;
};

}  // namespace heapscope
