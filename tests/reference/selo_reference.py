"""The SeLo indicators as the authors' SLM computes them (docs/LOCALISATION.md, Indicators), with the libraries
it calls: OpenCV's fillPoly and boxFilter, SciPy's maximum_filter, scikit-image's label and
regionprops. Written from the specification, for amfmn's `selo` tests.

Usage: selo_reference.py CASES.json OUT.json
CASES: [{"map": path of an 8-bit gray PNG, "polygons": [[[x, y], ...], ...]}, ...]
OUT: [{"mask_px", "centers": [[x, y], ...], "rsu", "rda", "ras", "rmi"}, ...]
"""
import json
import math
import sys

import cv2
import numpy as np
import skimage.measure
from scipy.ndimage import maximum_filter


def centres(prob):
    gray = np.asarray(prob * 255.0, dtype=np.uint8)
    for _ in range(5):
        gray = cv2.boxFilter(gray, -1, (50, 50), normalize=True, borderType=cv2.BORDER_REFLECT_101)
    peaks = (maximum_filter(gray, size=1000, mode="reflect") == gray) & (gray > 0)
    labels = skimage.measure.label(peaks.astype(np.uint8), connectivity=2)
    found = [[int(c) for c in p.centroid][::-1] for p in skimage.measure.regionprops(labels)]
    found = [c for c in sorted(found, key=lambda c: prob[c[1]][c[0]], reverse=True) if prob[c[1]][c[0]] >= 0.5]
    return found


def region(points):
    cx = int(sum(p[0] for p in points) / len(points))
    cy = int(sum(p[1] for p in points) / len(points))
    r = int(1.5 * np.mean([math.hypot(p[0] - cx, p[1] - cy) for p in points]))
    return cx, cy, r


def indicators(prob, polygons):
    h, w = prob.shape
    mask = np.zeros((h, w))
    cv2.fillPoly(mask, [np.array(p, np.int32) for p in polygons], 1)
    inside, total, area = float((prob * mask).sum()), float(prob.sum()), float(mask.sum())
    rsu = 1 - math.exp(-0.707 * (inside / (total - inside + 1e-7)) * ((h * w - area) / area))
    regions = [region(p) for p in polygons]
    found = centres(prob)
    if not found:
        ras = 1.0
    else:
        shifts = []
        for cx, cy, r in regions:
            near = [math.hypot(x - cx, y - cy) for x, y in found if math.hypot(x - cx, y - cy) <= r]
            shifts.append((np.mean(near) if near else r) / r)
        ras = (math.exp(3 * np.mean(shifts)) - 1) / (math.exp(3) - 1)
    rdas = []
    for cx, cy, r in regions:
        near = [(x, y) for x, y in found if math.hypot(x - cx, y - cy) <= r]
        if len(near) <= 1:
            rdas.append(len(near))
        else:
            mx, my = np.mean([p[0] for p in near]), np.mean([p[1] for p in near])
            spread = np.mean([math.hypot(x - mx, y - my) for x, y in near]) / r
            rdas.append(0.5 * (1 - spread) + math.exp(-0.5 * (len(near) + 2)))
    rda = float(np.mean(rdas))
    rmi = 0.4 * rsu + 0.35 * (1 - ras) + 0.25 * rda
    return {"mask_px": int(mask.sum()), "centers": found, "rsu": rsu, "rda": rda, "ras": ras, "rmi": rmi}


cases = json.load(open(sys.argv[1]))
out = [indicators(cv2.imread(c["map"], cv2.IMREAD_GRAYSCALE) / 255.0, c["polygons"]) for c in cases]
json.dump(out, open(sys.argv[2], "w"))
