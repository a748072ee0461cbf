"""An example program with a memory problem: a cache that is never trimmed.

Each request parses a document, keeps a "summary" in a module-level cache
(the leak), and builds a large temporary report that is dropped again.
Run it under heapscope to see which line holds the memory:

    heapscope top examples/leaky_cache.py
"""

import json

_SUMMARY_CACHE = {}


def parse(request_id):
    document = {"id": request_id, "items": [{"n": i, "tag": f"item-{i}"} for i in range(50)]}
    return json.loads(json.dumps(document))


def summarise(document):
    # The leak: every summary is kept forever, keyed by a never-repeating id.
    _SUMMARY_CACHE[document["id"]] = [item["tag"] * 4 for item in document["items"]]


def render_report(document):
    # Temporary: big, but released when the request ends.
    return "\n".join(f"{item['n']:>6} {item['tag']}" for item in document["items"] * 20)


def handle(request_id):
    document = parse(request_id)
    summarise(document)
    report = render_report(document)
    return len(report)


def main():
    served = sum(handle(request_id) for request_id in range(2000))
    print(f"served 2000 requests ({served} bytes of reports); cache holds {len(_SUMMARY_CACHE)} summaries")


if __name__ == "__main__":
    main()
