"""A small Dask computation profiled with heapscope.dask: two worker
processes load, parse and summarise batches of records. Each task's memory
shows under its worker and its task prefix (load-batch, parse-batch,
summarise) in the merged report.

    python examples/dask_tasks.py OUTPUT_DIR
    heapscope flamegraph OUTPUT_DIR/merged.hscap

Needs distributed (pip install distributed).
"""

import sys

from distributed import Client, LocalCluster

import heapscope.dask


def load_batch(number, rows):
    return [f"{number},{row},{row * 7 % 1000},customer-{row % 97}" for row in range(rows)]


def parse_batch(lines):
    return [tuple(line.split(",")) for line in lines]


def summarise(*batches):
    totals = {}
    for batch in batches:
        for _batch, _row, amount, customer in batch:
            totals[customer] = totals.get(customer, 0) + int(amount)
    return totals


def main(output):
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with heapscope.dask.profile(client, output=output) as result:
            loaded = [client.submit(load_batch, number, 30_000 + 10_000 * number, key=f"load-batch-{number}")
                      for number in range(6)]
            parsed = [client.submit(parse_batch, batch, key=f"parse-batch-{number}")
                      for number, batch in enumerate(loaded)]
            totals = client.submit(summarise, *parsed, key="summarise-0").result()
        print(f"{len(totals)} customers; merged capture: {result.path}")
        for peak in result.peaks:
            top = ", ".join(f"{task} {size / 2**20:.1f} MiB" for task, size in list(peak.tasks.items())[:3])
            print(f"worker {peak.worker}: peak {peak.bytes / 2**20:.1f} MiB ({top})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "heapscope-dask")
