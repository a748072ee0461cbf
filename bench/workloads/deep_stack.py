"""Recurse to a stack depth of 150 frames, then allocate many small objects there."""

DEPTH = 150
ALLOCS = 10_000_000  # scale: ~0.75 s plain on the reference machine


def churn():
    kept = []
    for i in range(ALLOCS):
        obj = [i, (i, i + 1)]
        if i % 256 == 0:
            kept.append((obj, str(i)))
    return kept


def descend(n):
    if n > 1:
        return descend(n - 1)
    return churn()


def main():
    return descend(DEPTH)


if __name__ == "__main__":
    main()
