"""Loads amfmn weights into the PyTorch reference with load_state_dict(strict=True), then writes
the reference's own state_dict back (so amfmn can load what PyTorch exported).

Usage: strict_load.py IN.safetensors OUT.safetensors VOCAB_SIZE ATT_TYPE SEQ2VEC EMBED_DIM IMAGE_SIZE
"""
import sys

from safetensors.torch import load_file, save_file

from amfmn_reference import AMFMN

source, target, vocab, att, seq2vec, embed, size = sys.argv[1:8]
model = AMFMN(int(vocab), att_type=att, seq2vec=seq2vec, embed_dim=int(embed), image_size=int(size))
model.load_state_dict(load_file(source), strict=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, target)
print(len(model.state_dict()))
