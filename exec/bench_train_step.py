"""Training-step time of the PyTorch reference of AMFMN (tests/reference/amfmn_reference.py, the
original's modules and loss) with torch.optim.Adam, on random 256x256 images and 15-token
captions, and of its text encoder alone (forward + backward).

Usage: bench_train_step.py BATCH STEPS; prints step_seconds=<median> and text_seconds=<median>.
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from amfmn_reference import AMFMN, contrastive_loss  # noqa: E402

batch, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = AMFMN(1349, dropout=0.25)
model.train()
adam = torch.optim.Adam(model.parameters(), lr=2e-4)
images = torch.randn(batch, 3, 256, 256)
ids = torch.randint(1, 1349, (batch, 15))


def timed(fn):
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        fn()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def step():
    loss = contrastive_loss(model(images, ids), 0.2)
    adam.zero_grad()
    loss.backward()
    adam.step()


print(f"step_seconds={timed(step):.4f}")
print(f"text_seconds={timed(lambda: model.text_feature(ids).sum().backward()):.4f}")
