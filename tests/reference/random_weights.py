"""Writes the state_dict of a freshly initialised PyTorch reference model as safetensors.

Usage: random_weights.py OUT VOCAB_SIZE ATT_TYPE EMBED_DIM IMAGE_SIZE
"""
import sys

import torch
from safetensors.torch import save_file

from amfmn_reference import AMFMN

out, vocab, att, embed, size = sys.argv[1:6]
torch.manual_seed(0)
model = AMFMN(int(vocab), att_type=att, embed_dim=int(embed), image_size=int(size))
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
