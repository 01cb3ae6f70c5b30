#!/usr/bin/env python3
"""Writes experiments/digit-5-edges.png, the control image of the digits-sd ControlNet experiment: the edge map
(models/train_controlnet.py's `edge_map`, white edges on black, 32×32 RGB) of a held-out "5" from the split
models/train.py makes (never trained on) — the first held-out 5 that the classifier (models/mnist16-features.onnx)
reads as a 5 with probability at least 0.99, so that the control is an unambiguous 5. It prints the digit's index
in the 10,000 digits and the classifier's probability.

    /work/venvs/pipelines/bin/python experiments/make_control_digit.py
"""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
import train as mnist  # noqa: E402
import train_conditional as tc  # noqa: E402
import train_controlnet as tcn  # noqa: E402

DIGIT = 5
MIN_PROB = 0.99


def main():
    images, labels = mnist.load_digits(mnist.fetch_mnist(Path.home() / ".cache" / "difflab" / "mnist"))
    _, held = mnist.make_split(len(images))
    fives = held[labels[held] == DIGIT]
    extractor = mnist.FeatureExtractor(REPO / "models" / "mnist16-features.onnx", threads=1)
    pred, probs = tcn.classify(extractor, tc.to_sd_space(images[fives]).numpy())
    sure = np.flatnonzero((pred == DIGIT) & (probs[:, DIGIT] >= MIN_PROB))
    pick = int(fives[sure[0]])
    out = REPO / "experiments" / f"digit-{DIGIT}-edges.png"
    tcn.edge_map(tcn.mnist_uint8(images[pick])).save(out)
    print(f"digit {pick} (held-out {DIGIT} no. {sure[0]} of {len(fives)}, counting from 0; classifier p = "
          f"{probs[sure[0], DIGIT]:.4f}) -> {out}")


if __name__ == "__main__":
    main()
