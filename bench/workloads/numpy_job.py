"""A NumPy job: array creation, arithmetic, reductions and temporaries (no BLAS)."""
import numpy as np

SIZE = 200_000
ROUNDS = 120  # scale: ~0.75 s plain on the reference machine


def main():
    rng = np.random.default_rng(12345)
    acc = 0.0
    kept = []
    for r in range(ROUNDS):
        x = rng.standard_normal(SIZE)
        y = np.sin(x) * 2.0 + x ** 2 - np.abs(x)  # temporaries
        z = np.cumsum(y)[::3].copy()
        order = np.argsort(x[:20_000])
        small = [np.arange(i % 16 + 1) * 0.5 for i in range(500)]
        if r % 10 == 0:
            kept.append(z)
        acc += float(y.sum() + z.mean() + y.std() + order[0] + sum(a.sum() for a in small))
    return kept, acc


if __name__ == "__main__":
    main()
