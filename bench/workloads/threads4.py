"""Four threads allocating small objects at the same time."""
import threading

THREADS = 4
ROUNDS = 1_200_000  # per thread; scale: ~0.75 s plain on the reference machine


def worker(tid, barrier, out):
    barrier.wait()
    kept = []
    for i in range(ROUNDS):
        item = {"t": tid, "i": i, "v": [i, i * 2, (tid, i)]}
        if i % 128 == 0:
            kept.append(item)
    out[tid] = kept


def main():
    barrier = threading.Barrier(THREADS)
    out = [0] * THREADS
    threads = [threading.Thread(target=worker, args=(t, barrier, out)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


if __name__ == "__main__":
    main()
