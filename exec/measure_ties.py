"""What the tie rule changes: recall metrics of RSICD-like score matrices with exact ties
(duplicate captions, as RSICD has), computed the original's way (NumPy's unstable argsort,
reversed) and by amfmn's `metrics` (ties: the lower caption or image index ranks first).

Usage: $AMFMN_PYTHON exec/measure_ties.py AMFMN_BINARY WORK_DIR   (exec/measure_ties.sh runs it)
Prints one table per share of shared sentences: the original's value, amfmn's, and the difference.
"""
import json
import subprocess
import sys

import numpy as np

NAMES = "r1i r5i r10i medri meanri r1t r5t r10t medrt meanrt".split()


def scores(seed, shared):
    """1093 images x 5465 captions (RSICD's test split); images of 30 classes; each image has 1-5
    distinct sentences repeated to 5, a share `shared` of them generic sentences of its class that
    other images use verbatim (exact ties)."""
    rng = np.random.default_rng(seed)
    n_img, classes, d = 1093, 30, 64
    cls = rng.integers(0, classes, n_img)
    centroids = rng.normal(0, 1, (classes, d))
    images = centroids[cls] + rng.normal(0, 1.2, (n_img, d))
    generic = centroids[:, None, :] + rng.normal(0, 0.5, (classes, 3, d))
    captions = []
    for i in range(n_img):
        own = [generic[cls[i], rng.integers(0, 3)] if rng.random() < shared
               else centroids[cls[i]] + rng.normal(0, 1.3, d) for _ in range(rng.integers(1, 6))]
        captions.extend(own + [own[rng.integers(0, len(own))] for _ in range(5 - len(own))])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    return (unit(images) @ unit(np.array(captions)).T).astype(np.float32)


def original_metrics(sims):
    """The original's acc_i2t2 and acc_t2i2 (utils.py)."""
    n = sims.shape[0]
    ri = np.array([min(np.where(np.argsort(sims[k])[::-1] == c)[0][0] for c in range(5 * k, 5 * k + 5))
                   for k in range(n)], dtype=float)
    rt = np.array([np.where(np.argsort(sims.T[c])[::-1] == c // 5)[0][0] for c in range(5 * n)], dtype=float)
    summary = lambda r: [100.0 * (r < 1).mean(), 100.0 * (r < 5).mean(), 100.0 * (r < 10).mean(),
                         np.floor(np.median(r)) + 1, r.mean() + 1]
    return summary(ri) + summary(rt)


amfmn, work = sys.argv[1], sys.argv[2]
for shared in (0.1, 0.35):
    sims = scores(0, shared)
    path = f"{work}/sims_{shared}.npy"
    np.save(path, sims)
    ours = json.loads(subprocess.run([amfmn, "metrics", "--sims", path, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    theirs = original_metrics(sims)
    tied = np.mean([len(np.unique(row)) for row in sims[:100]]) / sims.shape[1]
    print(f"\nshared sentences {shared:.0%}: {100 * (1 - tied):.0f}% of a row's scores are tied")
    print(f"{'metric':8}{'original':>10}{'amfmn':>10}{'diff':>8}")
    for name, value in zip(NAMES, theirs):
        print(f"{name:8}{value:10.2f}{ours[name]:10.2f}{ours[name] - value:8.2f}")
