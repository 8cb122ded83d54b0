"""Reference image operations: PIL and torchvision, as the original data.py applies them.

Usage: pil_transforms.py JOBS  where each line of the file JOBS is one operation
(outputs are raw little-endian arrays):
  decode IN OUT               uint8 HxWx3 of Image.open(IN).convert('RGB')
  resize IN W H OUT           uint8 after transforms.Resize((H, W))
  rotate IN ANGLE OUT         uint8 after F.rotate(img, ANGLE) (NEAREST, fill 0)
  train IN R C ANGLE TOP LEFT OUT
                                                float32 3xCxC: Resize((R, R)), rotate by ANGLE,
                                                crop CxC at (TOP, LEFT), ToTensor, Normalize
  eval IN S OUT               float32 3xSxS: Resize((S, S)), ToTensor, Normalize
  cubic IN W H OUT            uint8 HxWx3 of OpenCV's resize(..., INTER_CUBIC) of the RGB image
  jpeg IN QUALITY SUBSAMPLING PROGRESSIVE MODE ORIENTATION OUT
                              a JPEG file written by PIL from IN: SUBSAMPLING 0 (4:4:4), 1 (4:2:2)
                              or 2 (4:2:0), PROGRESSIVE 0/1, MODE RGB or L, ORIENTATION an EXIF
                              orientation tag (0: none)
"""
import sys

import numpy as np
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image, ImageFile

ImageFile.MAXBLOCK = 1 << 24  # room for progressive JPEGs in one block

NORMALIZE = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def rgb(path):
    return Image.open(path).convert("RGB")


def save_u8(img, out):
    np.asarray(img, dtype=np.uint8).tofile(out)


def save_f32(tensor, out):
    tensor.numpy().astype("<f4").tofile(out)


def run(op, args):
    if op == "decode":
        save_u8(rgb(args[0]), args[1])
    elif op == "resize":
        w, h = int(args[1]), int(args[2])
        save_u8(T.Resize((h, w))(rgb(args[0])), args[3])
    elif op == "rotate":
        save_u8(F.rotate(rgb(args[0]), float(args[1])), args[2])
    elif op == "train":
        r, c, angle, top, left = int(args[1]), int(args[2]), float(args[3]), int(args[4]), int(args[5])
        img = F.rotate(T.Resize((r, r))(rgb(args[0])), angle)
        save_f32(NORMALIZE(F.to_tensor(F.crop(img, top, left, c, c))), args[6])
    elif op == "eval":
        s = int(args[1])
        save_f32(NORMALIZE(F.to_tensor(T.Resize((s, s))(rgb(args[0])))), args[2])
    elif op == "cubic":
        import cv2

        w, h = int(args[1]), int(args[2])
        save_u8(cv2.resize(np.asarray(rgb(args[0])), (w, h), interpolation=cv2.INTER_CUBIC), args[3])
    elif op == "jpeg":
        quality, subsampling, progressive, mode, orientation = args[1:6]
        exif = Image.Exif()
        if int(orientation):
            exif[0x0112] = int(orientation)
        rgb(args[0]).convert(mode).save(
            args[6], "JPEG", quality=int(quality), subsampling=int(subsampling),
            progressive=bool(int(progressive)), exif=exif.tobytes())
    else:
        sys.exit(f"unknown operation {op}")


with open(sys.argv[1]) as jobs:
    for line in jobs:
        if line.strip():
            op, *args = line.split()
            run(op, args)
