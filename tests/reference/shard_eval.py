"""The original evaluation (test_single.py / engine.validate_test / utils.shard_dis) on the
PyTorch reference: every pair of an image shard and a caption shard goes through the whole
model, so images are encoded once per caption shard and captions once per image shard.

Usage: shard_eval.py WEIGHTS VOCAB DATA_DIR IMAGE_DIR IMAGE_SIZE SHARD ATT_TYPE EMBED_DIM OUT.npy
Prints seconds=<time of the score computation> (data loading excluded). The environment's
AMFMN_REFERENCE_DEVICE (default cpu) chooses where the model runs.
"""
import os
import json
import sys
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import load_file

from amfmn_reference import AMFMN
from text_reference import caption_tokens

weights, vocab_path, data, image_dir, size, shard, att, embed, out = sys.argv[1:10]
size, shard, embed = int(size), int(shard), int(embed)
word2idx = json.load(open(vocab_path))["word2idx"]
captions = open(f"{data}/test_caps.txt", "rb").read().split(b"\n")[:-1]
names = open(f"{data}/test_filename.txt").read().split("\n")[:-1]
im_div = 5 if len(names) != len(captions) else 1

ids = [[word2idx.get(t, word2idx["<unk>"]) for t in caption_tokens(c)] for c in captions]
text = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
for i, c in enumerate(ids):
    text[i, : len(c)] = c
transform = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
per_image = names[::5] if im_div == 1 else names
images = np.stack([transform(Image.open(f"{image_dir}/{n}").convert("RGB")).numpy() for n in per_image])

torch.manual_seed(0)
model = AMFMN(len(word2idx), att_type=att, embed_dim=embed, image_size=size)
model.load_state_dict(load_file(weights), strict=True)
device = os.environ.get("AMFMN_REFERENCE_DEVICE", "cpu")
model.to(device)
model.eval()
start = time.perf_counter()
d = np.zeros((len(images), len(text)))
with torch.no_grad():
    for i in range(0, len(images), shard):
        for j in range(0, len(text), shard):
            im = torch.from_numpy(images[i : i + shard]).float().to(device)
            s = torch.from_numpy(text[j : j + shard]).to(device)
            d[i : i + shard, j : j + shard] = model(im, s).reshape(len(im), len(s)).cpu().numpy()
print(f"seconds={time.perf_counter() - start:.3f}")
np.save(out, d.astype(np.float32))
