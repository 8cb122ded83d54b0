"""Runs the PyTorch reference on weights and inputs written by amfmn and writes its outputs.

Usage: parity.py CONFIG.json
CONFIG: {"weights": path, "inputs": path, "output": path, "vocab_size": n, "att_type": ...,
         "seq2vec": ..., "embed_dim": d, "image_size": s, "margin": m, "max_violation": bool,
         "prior": optional path of a safetensors file with a [B, B] "prior" matrix, used with
         "gamma" and "beta" for dynamic margins, "autocast": a path for the backbone's
         outputs under bf16 autocast, "channels_last": true to run that in channels-last layout}
inputs: images [B, 3, S, S] f32, ids [B, L] i64.
output: scores_eval [B, B], scores_train [B, B], loss [], MVSA's spatial gate mvsa_gate
[B, o, S/16, S/16] and its output mvsa_fv [B, d] (evaluation mode), and grad.<key> for every parameter
that received a gradient; the weights are loaded with load_state_dict(strict=True).
With "autocast" (written there): a fresh copy of the model in training mode runs extract_feature under
torch.autocast("cpu", torch.bfloat16): autocast.f1..f4 (ResNet-18's stages), autocast.lower and
autocast.higher, and after the backward of sum(lower²) + sum(higher²) (in fp32, outside autocast)
autocast.grad.<key> of the ResNet's parameters and autocast.buffer.<key> of its batch-norm
buffers.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file

from amfmn_reference import AMFMN, contrastive_loss, dynamic_margins

cfg = json.load(open(sys.argv[1]))
torch.manual_seed(0)


def loaded_model():
    """The reference model with amfmn's weights."""
    net = AMFMN(cfg["vocab_size"], att_type=cfg["att_type"], seq2vec=cfg["seq2vec"], dropout=0.0,
                embed_dim=cfg["embed_dim"], image_size=cfg["image_size"])
    net.load_state_dict(load_file(cfg["weights"]), strict=True)
    return net


def gradients_and_buffers(module, prefix, into):
    """grad.<key> of every parameter of `module` with a gradient and buffer.<key> of its buffers,
    the keys behind `prefix`."""
    for name, p in module.named_parameters():
        if p.grad is not None:
            into["grad." + prefix + name] = p.grad.contiguous()
    for name, b in module.named_buffers():
        into["buffer." + prefix + name] = b.contiguous()


model = loaded_model()
inputs = load_file(cfg["inputs"])
images, ids = inputs["images"], inputs["ids"]

out = {}
model.eval()
maps = {}
gate_hook = model.mvsa.conv1x1_2.register_forward_hook(lambda m, i, o: maps.__setitem__("gate", torch.sigmoid(o)))
fv_hook = model.mvsa.register_forward_hook(lambda m, i, o: maps.__setitem__("fv", o))
with torch.no_grad():
    out["scores_eval"] = model(images, ids).contiguous()
gate_hook.remove()
fv_hook.remove()
out["mvsa_gate"] = maps["gate"].contiguous()
out["mvsa_fv"] = maps["fv"].contiguous()
model.train()
scores = model(images, ids)
margin = cfg["margin"]
if cfg.get("prior"):
    margin = dynamic_margins(load_file(cfg["prior"])["prior"], cfg["gamma"], cfg["beta"])
loss = contrastive_loss(scores, margin, cfg["max_violation"])
loss.backward()
out["scores_train"] = scores.detach().contiguous()
out["loss"] = loss.detach().reshape([])
gradients_and_buffers(model, "", out)
save_file(out, cfg["output"])

if cfg.get("autocast"):
    fresh = loaded_model()
    fresh.train()
    if cfg.get("channels_last"):
        fresh = fresh.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    resnet = fresh.extract_feature.resnet
    stages = {}
    for i in range(1, 5):
        getattr(resnet, f"layer{i}").register_forward_hook(lambda m, inp, o, i=i: stages.__setitem__(i, o))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lower, higher, _ = fresh.extract_feature(images)
    out = {f"f{i}": stages[i].float().contiguous() for i in range(1, 5)}
    out["lower"] = lower.float().contiguous()
    out["higher"] = higher.float().contiguous()
    (lower.float().square().sum() + higher.float().square().sum()).backward()
    gradients_and_buffers(resnet, "extract_feature.resnet.", out)
    save_file({"autocast." + key: value for key, value in out.items()}, cfg["autocast"])
