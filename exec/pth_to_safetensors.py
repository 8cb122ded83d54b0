"""Converts a PyTorch checkpoint to safetensors for amfmn: a torchvision state dict (e.g. the
legacy resnet18-5c106cde.pth that libtorch cannot read) or a checkpoint of the original AMFMN code
(`{'model': state_dict, ...}` in a .pth.tar), whose keys amfmn uses unchanged.

Usage: $AMFMN_PYTHON exec/pth_to_safetensors.py IN.pth OUT.safetensors
"""
import sys

import torch
from safetensors.torch import save_file

source, target = sys.argv[1], sys.argv[2]
checkpoint = torch.load(source, map_location="cpu", weights_only=False)
state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint.state_dict()
state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items() if torch.is_tensor(v)}
save_file({k: v.contiguous() for k, v in state.items()}, target)
print(f"{len(state)} tensors written to {target}")
