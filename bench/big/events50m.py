"""About 50 million allocation events with Python allocators traced: a loop
that makes and drops small objects (each iteration allocates and frees a
list and an int), with a slowly growing set of survivors so the peak is
reached late."""

ROUNDS = 6_700_000  # about 7.5 events a round (allocations + frees): ~50 million


def main():
    kept = []
    for i in range(ROUNDS):
        row = [i, i + 1]
        if i % 1000 == 0:
            kept.append(row)
    return kept


if __name__ == "__main__":
    main()
