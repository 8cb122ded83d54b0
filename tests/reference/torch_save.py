"""Writes amfmn weights the way the original code and torchvision save them, for amfmn's native
torch.save reader: loaded into the PyTorch reference (strict), then saved with torch.save in the
zip and the legacy format, as the original's checkpoint dict ({'epoch', 'model', 'best_rsum',
'options', 'Eiters'}) and as a bare state dict, with and without DataParallel's `module.`
prefixes; SLM's reduced model (no attention or fusion weights); and a file whose pickle calls
os.system, which must be refused.

Usage: torch_save.py IN.safetensors OPTIONS.json OUT_DIR VOCAB_SIZE ATT_TYPE SEQ2VEC EMBED_DIM IMAGE_SIZE
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

from amfmn_reference import AMFMN

source, options_path, out, vocab, att, seq2vec, embed, size = sys.argv[1:9]
model = AMFMN(int(vocab), att_type=att, seq2vec=seq2vec, embed_dim=int(embed), image_size=int(size))
model.load_state_dict(load_file(source), strict=True)
options = json.load(open(options_path))
wrapped = torch.nn.DataParallel(model)


def original(state):
    return {"epoch": 3, "model": state, "best_rsum": 123.25, "options": options, "Eiters": 77}


torch.save(original(model.state_dict()), f"{out}/original_zip.pth.tar")
torch.save(original(wrapped.state_dict()), f"{out}/original_legacy.pth.tar", _use_new_zipfile_serialization=False)
torch.save(wrapped.state_dict(), f"{out}/state_zip.pth")
torch.save(model.state_dict(), f"{out}/state_legacy.pth", _use_new_zipfile_serialization=False)
# SLM's reduced AMFMN: the encoders only, no visual-guided attention or fusion gate.
encoders = {k: v for k, v in model.state_dict().items() if not k.startswith(("cross_attention_s.", "vgmf_gate."))}
torch.save(original(encoders), f"{out}/slm_reduced.pth.tar")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


torch.save({"model": Evil()}, f"{out}/evil.pth")
print(len(model.state_dict()))
