"""An image pipeline that leaks one image per batch, found with heapscope.pools.

Each batch decodes a few camera frames (NumPy arrays turned into Pillow
images), blurs them, extracts features, and makes a small cover image for
the batch. The covers are meant to be shown once and dropped, but a
forgotten dictionary keeps every one of them. The program registers its
Pillow images and NumPy arrays in two pools, takes a snapshot before and after
five batches, and prints the diff: the line that made the images still alive.

    pip install pillow numpy
    python examples/image_pipeline.py
"""

import os
import sys

import numpy as np
from PIL import Image, ImageFilter

from heapscope import pools

images = pools.pool("images")   # Pillow images
arrays = pools.pool("arrays")   # NumPy arrays

BATCH_SIZE = 8
FRAME_SHAPE = (120, 160, 3)     # height, width, RGB

# The bug: meant to hold the cover of the batch being shown, it keeps all of them.
_covers_shown = {}


def image_bytes(image):
    """The pixel data a Pillow image holds (one byte per band and pixel)."""
    return image.width * image.height * len(image.getbands())


def array_bytes(array):
    return array.nbytes


def decode(seed):
    """A synthetic camera frame, as the decoder hands it out: an array, then an image."""
    rng = np.random.default_rng(seed)
    pixels = arrays.tracked(rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8), size=array_bytes, kind="frame")
    return images.tracked(Image.fromarray(pixels), size=image_bytes, kind="decoded")


def features(image):
    blurred = images.tracked(image.filter(ImageFilter.GaussianBlur(2)), size=image_bytes, kind="blurred")
    values = arrays.tracked(np.asarray(blurred, dtype=np.float32) / 255.0, size=array_bytes, kind="features")
    return float(values.mean())


def run_batch(batch):
    frames = [decode(batch * BATCH_SIZE + i) for i in range(BATCH_SIZE)]
    scores = [features(frame) for frame in frames]
    cover = images.tracked(frames[0].resize((80, 60)), size=image_bytes, kind="cover")
    _covers_shown[batch] = cover   # never removed
    return sum(scores) / len(scores)


def describe(line):
    """file:line and the source text of a (filename, lineno) pair."""
    filename, lineno = line
    try:
        with open(filename) as source:
            text = source.read().splitlines()[lineno - 1].strip()
    except (OSError, IndexError):
        text = ""
    return f"{os.path.relpath(filename)}:{lineno}: {text}"


def main(batches=5):
    pools.enable_detailed_profiling()   # before the first resource: every resource keeps its source
    run_batch(0)                        # warm up (imports, first-use caches)
    before = pools.make_snapshot()
    for batch in range(1, batches + 1):
        run_batch(batch)
    after = pools.make_snapshot()
    diff = pools.diff(first_snapshot=before, second_snapshot=after)

    print(f"{batches} batches of {BATCH_SIZE} frames: {diff.count_diff:+d} resources alive, "
          f"{diff.size_diff:+d} bytes ({len(diff.new)} new, {len(diff.released)} released)")
    for line, count, size in diff.new_by_line():
        kinds = sorted({(r.pool, r.kind) for r in diff.new if (r.source[0].filename, r.source[0].lineno) == line})
        what = ", ".join(f"{pool}/{kind}" for pool, kind in kinds)
        print(f"leak: {count} resources ({what}), {size} bytes, made at {describe(line)}")
    return 1 if diff.new else 0


if __name__ == "__main__":
    sys.exit(main())
