"""An example program with the shape of a small data job: it parses orders,
builds feature arrays with NumPy, scores them, keeps a cache of customer
histories (which only grows) and ships results from a worker thread.

Run it under heapscope and look at the pictures:

    heapscope run --native --trace-python-allocators -o orders.hscap examples/order_pipeline.py
    heapscope flamegraph --temporal orders.hscap       # writes heapscope-flamegraph-orders.html

``--cache-every N`` keeps one history in N (default 4): run it twice with
different values and ``heapscope diff`` shows the cache's growth.
"""

import argparse
import json
import queue
import threading
import time

import numpy as np

_HISTORY = {}  # customer -> past orders: never trimmed


def make_orders(batch, size):
    return [json.dumps({"id": batch * size + i, "customer": f"c{(batch * 7919 + i) % 997}",
                        "items": [{"sku": f"sku-{(i * 31 + k) % 503}", "qty": 1 + k % 3} for k in range(8)]})
            for i in range(size)]


def parse(lines):
    return [json.loads(line) for line in lines]


def features(orders):
    matrix = np.zeros((len(orders), 512))
    for row, order in enumerate(orders):
        for item in order["items"]:
            matrix[row, hash(item["sku"]) % 512] += item["qty"]
    return matrix


def score(matrix, weights):
    return matrix @ weights


def remember(orders, keep_every):
    for order in orders:
        if order["id"] % keep_every == 0:
            _HISTORY.setdefault(order["customer"], []).append(order)


def ship(outbox):
    sent = []
    while True:
        scores = outbox.get()
        if scores is None:
            return
        sent.append(scores.tobytes())  # the "network" buffer, dropped in batches
        if len(sent) > 4:
            sent.clear()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=400)
    parser.add_argument("--cache-every", type=int, default=4)
    options = parser.parse_args(argv)
    weights = np.linspace(0.0, 1.0, 512)
    outbox = queue.Queue()
    shipper = threading.Thread(target=ship, args=(outbox,), name="shipper")
    shipper.start()
    for batch in range(options.batches):
        orders = parse(make_orders(batch, options.batch_size))
        outbox.put(score(features(orders), weights))
        remember(orders, options.cache_every)
        time.sleep(0.005)
    outbox.put(None)
    shipper.join()
    print(f"{len(_HISTORY)} customers remembered")


if __name__ == "__main__":
    main()
