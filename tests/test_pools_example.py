"""examples/image_pipeline.py: its pools diff names the line that leaks."""

import os

import pytest

from capture_helpers import run_script

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "image_pipeline.py")


def test_the_image_pipeline_diff_names_the_leaking_line():
    pytest.importorskip("numpy")
    pytest.importorskip("PIL")
    with open(EXAMPLE) as source:
        text = source.read().splitlines()
    (leaking,) = [number for number, line in enumerate(text, 1) if line.strip().startswith("cover = images.tracked(")]
    result = run_script(EXAMPLE, check=False, cwd=os.path.dirname(EXAMPLE))
    assert result.returncode == 1, result.stderr  # leaks found
    out = result.stdout.splitlines()
    # One 80x60 RGB cover per batch, five batches; nothing else stays.
    assert out[0] == "5 batches of 8 frames: +5 resources alive, +72000 bytes (5 new, 0 released)"
    assert out[1:] == [f"leak: 5 resources (images/cover), 72000 bytes, made at image_pipeline.py:{leaking}: "
                       f"{text[leaking - 1].strip()}"]
