"""Many small containers: lists, dicts and tuples built and dropped, some kept."""

ROUNDS = 700_000  # scale: ~0.75 s plain on the reference machine


def main():
    kept = []
    for i in range(ROUNDS):
        row = [i, i + 1, i + 2, str(i)]
        rec = {"id": i, "row": row, "pair": (i, -i), "name": "item-%d" % i}
        squares = [(j, j * i) for j in range(6)]
        rec["n"] = len(squares) + len(tuple(row))
        if i % 64 == 0:
            kept.append(rec)
    return kept


if __name__ == "__main__":
    main()
