"""json.dumps / json.loads of a nested document, repeatedly."""
import json

RECORDS = 200
ROUNDS = 700  # scale: ~0.75 s plain on the reference machine


def make_doc():
    return {
        "version": 3,
        "records": [
            {
                "id": i,
                "name": "record-%04d" % i,
                "score": i * 0.25,
                "active": i % 3 == 0,
                "tags": ["t%d" % (i % 7), "g%d" % (i % 11), "plain"],
                "pos": {"x": i % 17, "y": i // 17, "path": [i, i + 1, i + 2]},
                "children": [{"k": j, "v": "v%d" % (i * j)} for j in range(4)],
            }
            for i in range(RECORDS)
        ],
    }


def main():
    doc = make_doc()
    size = 0
    for _ in range(ROUNDS):
        text = json.dumps(doc)
        back = json.loads(text)
        size += len(text)
    assert back == doc
    return back, size


if __name__ == "__main__":
    main()
