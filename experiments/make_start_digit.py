#!/usr/bin/env python3
"""Writes experiments/digit-3.png, the start image of experiments/digits-img2img.toml: the first "3" of the
held-out digits models/train.py splits off (never trained on), as digits-sd sees digits — 28×28 padded by 2
pixels of background to 32×32, grey in three channels — saved as 8-bit RGB.

    /work/venvs/pipelines/bin/python experiments/make_start_digit.py
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
import train as mnist  # noqa: E402
import train_conditional as tc  # noqa: E402


def main():
    images, labels = mnist.load_digits(mnist.fetch_mnist(Path.home() / ".cache" / "difflab" / "mnist"))
    _, held = mnist.make_split(len(images))
    first = int(held[np.flatnonzero(labels[held] == 3)[0]])
    x = tc.to_sd_space(images[first:first + 1])[0].numpy()  # [3, 32, 32] in [-1, 1]
    rgb = np.round((x.transpose(1, 2, 0) + 1) / 2 * 255).clip(0, 255).astype(np.uint8)
    out = REPO / "experiments" / "digit-3.png"
    Image.fromarray(rgb).save(out)
    print(f"digit {first} (a 3) -> {out}")


if __name__ == "__main__":
    main()
