"""Writes two small torch.save files (zip and legacy format) for the fuzz test's seeds: the
original code's checkpoint dict around a state dict with float, integer and transposed
(non-contiguous) tensors.

Usage: torch_small.py DIR
"""
import sys
from collections import OrderedDict

import torch

out = sys.argv[1]
torch.manual_seed(0)
state = OrderedDict(a=torch.randn(3, 4), b=torch.arange(5), c=torch.randn(2, 3).t(), d=torch.tensor(2.5))
checkpoint = {"epoch": 2, "model": state, "best_rsum": 10.5, "options": {"model": {"name": "AMFMN"}}, "Eiters": 9}
torch.save(checkpoint, f"{out}/small_zip.pth")
torch.save(checkpoint, f"{out}/small_legacy.pth", _use_new_zipfile_serialization=False)
