"""Reference gradient clipping: torch.nn.utils.clip_grad_norm_ on given gradients.

Usage: clip_grad_norm.py JSON, JSON = {"max_norm": m, "grads": [[...], ...]} (fp32 values)
-> {"total": the norm before clipping, "grads": the clipped gradients} as JSON (exact floats).
"""
import json
import sys

import torch

given = json.loads(sys.argv[1])
params = [torch.zeros(len(g), dtype=torch.float32, requires_grad=True) for g in given["grads"]]
for p, g in zip(params, given["grads"]):
    p.grad = torch.tensor(g, dtype=torch.float32)
total = torch.nn.utils.clip_grad_norm_(params, given["max_norm"])
print(json.dumps({"total": total.item(), "grads": [p.grad.tolist() for p in params]}))
