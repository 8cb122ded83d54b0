"""Writes a randomly initialised torchvision ResNet-18 state dict in the two formats of
torchvision's downloads: zip (like resnet18-f37072fd.pth) and legacy (like resnet18-5c106cde.pth),
plus the same weights as safetensors for comparison.

Usage: resnet_files.py DIR
"""
import sys

import torch
import torchvision
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
state = torchvision.models.resnet18(weights=None).state_dict()
state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
torch.save(state, f"{out}/resnet18-zip.pth")
torch.save(state, f"{out}/resnet18-legacy.pth", _use_new_zipfile_serialization=False)
save_file({k: v.contiguous() for k, v in state.items()}, f"{out}/expected.safetensors")
