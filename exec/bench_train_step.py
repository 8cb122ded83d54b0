"""Training-step time of the PyTorch reference of AMFMN (tests/reference/amfmn_reference.py, the
original's modules and loss) with torch.optim.Adam, on random 256x256 images and 15-token
captions, and of its text encoder alone (forward + backward).

Usage: bench_train_step.py BATCH STEPS [DEVICE=cpu] [AMP=off|bf16|fp16]; prints
step_seconds=<median>, text_seconds=<median> and, on CUDA, peak_mb=<peak allocated memory>.
AMP runs the forward and the loss under torch.autocast (fp16 with torch.amp.GradScaler), as a
PyTorch user would switch it on.
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from amfmn_reference import AMFMN, contrastive_loss  # noqa: E402

batch, steps = int(sys.argv[1]), int(sys.argv[2])
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
amp = sys.argv[4] if len(sys.argv) > 4 else "off"
dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
torch.manual_seed(0)
model = AMFMN(1349, dropout=0.25).to(device)
model.train()
adam = torch.optim.Adam(model.parameters(), lr=2e-4)
scaler = torch.amp.GradScaler(device, enabled=amp == "fp16")
images = torch.randn(batch, 3, 256, 256, device=device)
ids = torch.randint(1, 1349, (batch, 15), device=device)
if device != "cpu":
    torch.backends.cudnn.benchmark = True


def timed(fn):
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def step():
    if dtype is None:
        loss = contrastive_loss(model(images, ids), 0.2)
        adam.zero_grad()
        loss.backward()
        adam.step()
        return
    with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
        loss = contrastive_loss(model(images, ids), 0.2)
    adam.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(adam)
    scaler.update()


print(f"step_seconds={timed(step):.4f}")
print(f"text_seconds={timed(lambda: model.text_feature(ids).sum().backward()):.4f}")
if device != "cpu":
    print(f"peak_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
