#!/usr/bin/env python3
"""torch.randn reference values for tests/torch_noise.rs: `torch.randn(shape,
generator=torch.Generator("cpu").manual_seed(seed))` for a few seeds and shapes, float32.

    /work/venvs/pipelines/bin/python tests/data/torch_noise/make.py   # the tests/data/pipelines environment
"""
import json
from pathlib import Path

import torch

CASES = [(0, [1, 4, 8, 8]), (1, [1, 4, 8, 8]), (42, [1, 1, 16, 16]), (2**32 + 7, [1, 3, 5, 7]),
         (123456789, [4, 64, 64]), (7, [16]), (9, [1, 4, 3, 3])]

out = []
for seed, shape in CASES:
    x = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    flat = x.flatten().tolist()
    out.append({"seed": seed, "shape": shape, "first": flat[:64], "last": flat[-64:], "n": len(flat),
                "sum": float(x.double().sum()), "sum_sq": float((x.double() ** 2).sum())})
meta = {"torch": torch.__version__, "cases": out}
Path(__file__).with_name("randn.json").write_text(json.dumps(meta, indent=1) + "\n")
print(f"{len(out)} cases, torch {torch.__version__}")
