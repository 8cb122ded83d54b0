"""The report of exec/bench_locate.sh: amfmn's stage times and peak memory (cold, and with the
crop codes cached), then the authors' SeLo v1 map stages (generate_selo.py, written from
docs/LOCALISATION.md (Pipeline): float64 sums and counts, the per-pixel division loop, min-max, a uint8 cast,
cv2.medianBlur 251) on amfmn's crop scores, timed side by side, and the two maps compared.

Usage: bench_locate.py WORK_DIR HEIGHT WIDTH
"""
import json
import sys
import time

import cv2
import numpy as np

work, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = {name: json.load(open(f"{work}/{name}.json")) for name in ("small", "cold", "warm")}
labels = {"small": "1024² (baseline)", "cold": f"{h}x{w} cold", "warm": f"{h}x{w} cached codes"}
print(f"{'run':<24} {'crops':>6} {'cut s':>7} {'sim s':>7} {'gnt s':>7} {'flt s':>7} {'peak MB':>8}")
for name, report in runs.items():
    s = report["seconds"]
    peak = int(open(f"{work}/{name}.peak_kb").read().split()[-1]) / 1024
    line = f"{report['crops']:>6} {s['cut']:>7.2f} {s['sim']:>7.2f} {s['gnt']:>7.3f} {s['flt']:>7.3f} {peak:>8.0f}"
    print(f"{labels[name]:<24} {line}")
print("crops per step:", ", ".join(f"{k}: {v}" for k, v in runs["cold"]["crops_per_step"].items()))

start = time.perf_counter()
heat_map = np.zeros([h, w], dtype=float)
heat_num = np.zeros([h, w], dtype=float)
for r0, r1, c0, c1, score in runs["cold"]["crop_scores"]:
    heat_map[r0:r1, c0:c1] += score
    heat_num[r0:r1, c0:c1] += 1
for i in range(h):
    for j in range(w):
        heat_map[i, j] = heat_map[i, j] / heat_num[i, j]
gnt = time.perf_counter() - start
start = time.perf_counter()
probmap = heat_map - np.min(heat_map)
probmap = np.uint8(255 * (probmap / np.max(probmap)))
probmap = cv2.medianBlur(probmap, 251)
flt = time.perf_counter() - start

ours = cv2.imread(f"{work}/cold.prob.png", cv2.IMREAD_GRAYSCALE)
differ = int(np.count_nonzero(ours != probmap))
amfmn = runs["cold"]["seconds"]["gnt"] + runs["cold"]["seconds"]["flt"]
print()
print(f"{'gnt + flt on the same scores':<32} {'gnt s':>8} {'flt s':>8} {'total s':>8}")
print(f"{'authors Python + OpenCV':<32} {gnt:>8.2f} {flt:>8.2f} {gnt + flt:>8.2f}")
c = runs["cold"]["seconds"]
print(f"{'amfmn':<32} {c['gnt']:>8.3f} {c['flt']:>8.3f} {amfmn:>8.3f}")
print(f"amfmn is {(gnt + flt) / amfmn:.1f}x faster; the two probability maps differ at {differ} of {h * w} pixels")
