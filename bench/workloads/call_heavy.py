"""Call-heavy pure Python with few allocations: recursive fib and method calls.

All values stay in CPython's small-int cache (-5..256), so the loop allocates
almost nothing and a tool's per-call cost dominates.
"""

FIB_N = 12     # fib(12) = 144: 465 calls per fib, every result a cached int
REPEAT = 24000  # scale: ~0.75 s plain on the reference machine


class Stepper:
    def __init__(self):
        self.state = 0

    def step(self, x):
        self.state = (self.state & 0x7F) + self.mix(x)  # <= 190
        return self.state

    def mix(self, x):
        return ((x & 0x1F) * 7 + 3) & 0x3F  # intermediates <= 220


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main():
    total = 0
    stepper = Stepper()
    for _ in range(REPEAT):
        total ^= fib(FIB_N)
        for i in range(200):
            stepper.step(i)
    return total, stepper.state


if __name__ == "__main__":
    main()
