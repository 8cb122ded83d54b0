"""Writes the hostile files of tests/hostile.rs into DIR, each as an attacker would craft it:

- pth/expanded.pth: a 1-element storage viewed as 50000 x 50000 (stride 0): 10 GB if copied.
- pth/huge_view.pth: the same view at 2^31 x 2^31 (a size whose bytes overflow).
- pth/views.pth: 2000 views of one 3 MB storage (6 GB if each view copies it).
- pth/list_bomb.pth: a data.pkl of 80 million list appends, deflated to a few hundred kB.
- pth/storage_bomb.pth: a storage of 1 GiB of zeros deflated to about 1 MB.
- pth/laughs.pth: an `options` entry of 60 levels of dicts that share their children (2^60).
- st/: a skip-thoughts folder (UniSkip) whose uni_skip.npz members claim 1 GiB each, deflated.
- map16/probmap_0.png: a 16-bit probability map, and map8/probmap_0.png: the same map as SLM's
  OpenCV reads it (`cv2.imread(..., IMREAD_GRAYSCALE)`).

Usage: hostile_files.py DIR WIDTH HEIGHT   (WIDTH x HEIGHT: the size of the probability maps)
"""
import io
import os
import struct
import sys
import zipfile
import zlib

import cv2
import numpy as np
import torch

out, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for sub in ["pth", "st", "map16", "map8"]:
    os.makedirs(os.path.join(out, sub), exist_ok=True)
pth = lambda name: os.path.join(out, "pth", name)

torch.save({"w": torch.zeros(1).expand(50000, 50000)}, pth("expanded.pth"))
torch.save({"w": torch.zeros(1).expand(2**31, 2**31)}, pth("huge_view.pth"))
base = torch.randn(750_000)
torch.save({f"w{i}": base.view(-1) for i in range(2000)}, pth("views.pth"))

with zipfile.ZipFile(pth("list_bomb.pth"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("archive/data.pkl", b"\x80\x02]q\x00" + b"K\x00a" * 80_000_000 + b".")
    z.writestr("archive/byteorder", "little")


def zeros_member(z, name, header, size):
    """A deflated member of `header` then `size` zero bytes, written chunk by chunk."""
    with z.open(name, "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 24)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(bytes(size % len(chunk)))


buf = io.BytesIO()
torch.save({"w": torch.zeros(4)}, buf)
small = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
elements = 1 << 28  # 1 GiB of float32
with zipfile.ZipFile(pth("storage_bomb.pth"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    for info in small.infolist():
        data = small.read(info)
        if info.filename.endswith("data.pkl"):
            # The storage's element count and the tensor's size (both pickled as BININT1 4).
            data = data.replace(b"K\x04", b"J" + struct.pack("<i", elements))
            z.writestr(info.filename, data)
        elif "/data/" in info.filename:
            zeros_member(z, info.filename, b"", elements * 4)
        else:
            z.writestr(info.filename, data)

level = {"a": 1}
for _ in range(60):
    level = {"x": level, "y": level}
torch.save({"model": {"w": torch.zeros(2)}, "options": level}, pth("laughs.pth"))

st = os.path.join(out, "st")
with open(os.path.join(st, "dictionary.txt"), "w") as f:
    f.write("UNK\nred\n")
np.save(os.path.join(st, "utable.npy"), np.zeros((2, 620), np.float32))
claimed = (1 << 30) // 4
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % claimed
header = header.ljust(117) + "\n"
npy_header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
with zipfile.ZipFile(os.path.join(st, "uni_skip.npz"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    for name in ["encoder_W", "encoder_U", "encoder_b"]:
        zeros_member(z, name + ".npy", npy_header, claimed * 4)

ramp = (np.arange(width * height, dtype=np.uint64).reshape(height, width) * 7919 % 65536).astype(np.uint16)
cv2.imwrite(os.path.join(out, "map16", "probmap_0.png"), ramp)
as_slm_reads = cv2.imread(os.path.join(out, "map16", "probmap_0.png"), cv2.IMREAD_GRAYSCALE)
cv2.imwrite(os.path.join(out, "map8", "probmap_0.png"), as_slm_reads)
