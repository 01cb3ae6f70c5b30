"""Writes fid_case.json: two feature sets and their FID as scipy computes it (pytorch-fid's formula,
scipy.linalg.sqrtm), and their unbiased MMD² with the cubic kernel over the whole sets.

    pip install numpy==2.4.6 scipy==1.17.1 && python tests/data/quality/make_fid_case.py
"""
import json
import pathlib

import numpy as np
from scipy import linalg

rng = np.random.default_rng(7)
dim = 8
mix = rng.normal(size=(dim, dim))
a = rng.normal(size=(200, dim)) @ mix * 0.5
b = rng.normal(size=(150, dim)) @ (mix + 0.3 * rng.normal(size=(dim, dim))) * 0.6 + 0.4
a = a.astype(np.float32)
b = b.astype(np.float32)


def fid(x, y):
    mu1, mu2 = x.astype(np.float64).mean(0), y.astype(np.float64).mean(0)
    s1, s2 = np.cov(x.astype(np.float64), rowvar=False), np.cov(y.astype(np.float64), rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    m = min(len(x), len(y))
    x, y = x[:m], y[:m]
    k = lambda p, q: (p @ q.T / dim + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


out = {
    "dim": dim,
    "a": a.ravel().tolist(),
    "b": b.ravel().tolist(),
    "fid_scipy": fid(a, b),
    "mmd2_first_150": mmd2(a[:150], b),
}
pathlib.Path(__file__).with_name("fid_case.json").write_text(json.dumps(out))
print(out["fid_scipy"], out["mmd2_first_150"])
