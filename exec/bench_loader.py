"""Loader throughput of the original pipeline: PIL decode + torchvision train transforms
(Resize 278 bilinear, RandomRotation, RandomCrop 256, ToTensor, Normalize) through
torch.utils.data.DataLoader, over every image of a precomp split.

Usage: bench_loader.py DATA_DIR WORKERS [BATCH] [EPOCHS]; prints images_per_second=<best epoch>.
"""
import os
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image

data, workers = sys.argv[1], int(sys.argv[2])
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 3

with open(os.path.join(data, "train_filename.txt")) as f:
    names = [line.strip() for line in f if line.strip()]

transform = T.Compose([
    T.Resize((278, 278)),
    T.RandomRotation((0, 90)),
    T.RandomCrop(256),
    T.ToTensor(),
    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])


class Images(torch.utils.data.Dataset):
    def __len__(self):
        return len(names)

    def __getitem__(self, i):
        return transform(Image.open(os.path.join(data, "images", names[i])).convert("RGB"))


loader = torch.utils.data.DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=workers)
best = 0.0
for epoch in range(epochs + 1):
    start = time.perf_counter()
    n = sum(b.shape[0] for b in loader)
    rate = n / (time.perf_counter() - start)
    if epoch > 0:
        best = max(best, rate)
print(f"images_per_second={best:.1f}")
