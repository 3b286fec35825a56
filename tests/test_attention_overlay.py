"""Part-attention overlay colouring: opacity from the winning probability rescaled from chance."""

from __future__ import annotations

import numpy as np

from occreid.evaluation.attention import PART_COLOURS, colour_probs


def test_colour_probs_hand_worked_pixels():
    image = np.full((1, 3, 3), 100, dtype=np.uint8)
    # 4 channels (chance 0.25); pixel 0: background wins; pixel 1: part 2 certain; pixel 2: part 1 at 0.625
    probs = np.array([[[0.7, 0.0, 0.125]], [[0.1, 0.0, 0.625]], [[0.1, 1.0, 0.125]], [[0.1, 0.0, 0.125]]],
                     dtype=np.float32)
    out = colour_probs(image, probs, alpha=0.7, floor=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    # certain: opacity 0.7 * (0.5 + 0.5 * 1) = 0.7
    want1 = np.rint(100 * 0.3 + PART_COLOURS[2] * 0.7)
    assert out[0, 1].tolist() == want1.tolist()
    # c = (0.625 - 0.25) / 0.75 = 0.5 -> opacity 0.7 * 0.75 = 0.525
    want2 = np.rint(100 * 0.475 + PART_COLOURS[1] * 0.525)
    assert out[0, 2].tolist() == want2.tolist()


def test_colour_probs_upsamples_to_the_image_and_keeps_dtype():
    image = np.zeros((8, 4, 3), dtype=np.uint8)
    probs = np.zeros((2, 2, 1), dtype=np.float32)
    probs[1] = 1.0  # part 1 everywhere
    out = colour_probs(image, probs)
    assert out.shape == (8, 4, 3) and out.dtype == np.uint8
    assert (out == np.rint(PART_COLOURS[1] * 0.7)).all()
