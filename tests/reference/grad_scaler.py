"""Reference fp16 loss scaling: torch.amp.GradScaler with torch.optim.Adam(fused=True) on the CPU.

Usage: grad_scaler.py JSON, JSON = {"lr": l, "max_norm": m, "growth_interval": n, "steps": k,
"inf_steps": [...], "w": [...], "v": [[...], ...]} (fp32 values). Each step backpropagates the
scaled loss sum(w²) + sum(v³) (times inf at the steps of inf_steps), unscales, clips the gradients
to max_norm, steps and updates the scale, as PyTorch's mixed-precision recipe does.
-> a list of {"scale", "growth_tracker", "step", "w", "v"}, one per step (exact floats).
"""
import json
import sys

import torch

given = json.loads(sys.argv[1])
w = torch.tensor(given["w"], dtype=torch.float32, requires_grad=True)
v = torch.tensor(given["v"], dtype=torch.float32, requires_grad=True)
adam = torch.optim.Adam([w, v], lr=given["lr"], fused=True)
scaler = torch.amp.GradScaler("cpu", growth_interval=given["growth_interval"])
out = []
for step in range(given["steps"]):
    adam.zero_grad()
    loss = (w * w).sum() + v.pow(3).sum()
    if step in given["inf_steps"]:
        loss = loss * float("inf")
    scaler.scale(loss).backward()
    scaler.unscale_(adam)
    torch.nn.utils.clip_grad_norm_([w, v], given["max_norm"])
    scaler.step(adam)
    scaler.update()
    out.append({
        "scale": scaler.get_scale(),
        "growth_tracker": int(scaler._growth_tracker.item()),
        "step": int(adam.state[w]["step"].item()) if w in adam.state else 0,
        "w": w.tolist(),
        "v": v.tolist(),
    })
print(json.dumps(out))
