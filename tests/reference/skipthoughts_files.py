"""Writes small skip-thoughts files (a 12-word dictionary, random tables and GRU parameters of
the real shapes) and, for each encoder variant, the weights the original `skipthoughts` package
would load from them for a given vocabulary (its _make_emb_state_dict / _make_rnn_state_dict).

Usage: skipthoughts_files.py DIR VOCAB_WORDS TABLE_FORMAT
TABLE_FORMAT: numeric (float32 2-d array), object3 (object array of rows, pickled by Python 3),
object2 (the same pickled the way Python 2 did, with str payloads: the original release).
Writes DIR/{dictionary.txt,utable.npy,btable.npy,uni_skip.npz,bi_skip.npz} and
DIR/expected_<Variant>.safetensors (keys relative to text_feature.seq2vec).
"""
import pickle
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

out, vocab_path, table_format = sys.argv[1], sys.argv[2], sys.argv[3]
vocab = open(vocab_path, encoding="utf-8").read().split("\n")
rng = np.random.default_rng(0)
dictionary = ["the", "UNK", "red", "house", "field", "boat", "river", "green", "tree", "port", "road", "red"]
with open(f"{out}/dictionary.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(dictionary) + "\n")


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 str (BINSTRING), like the original release's tables."""

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def save_table(path, table):
    if table_format == "numeric":
        np.save(path, table)
        return
    rows = np.empty(len(table), dtype=object)
    for i, row in enumerate(table):
        rows[i] = row.copy()
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": rows.shape})
        if table_format == "object3":
            pickle.dump(rows, f, protocol=3)
        else:
            Py2Pickler(f, protocol=2).dump(rows)
    loaded = np.load(path, allow_pickle=True, encoding="latin1")
    assert np.array_equal(np.stack(list(loaded)), table)


tables = {name: rng.standard_normal((len(dictionary), 620)).astype(np.float32) for name in ("utable", "btable")}
for name, table in tables.items():
    save_table(f"{out}/{name}.npy", table)


def gru_params(prefix, hidden):
    return {
        prefix + "W": rng.standard_normal((620, 2 * hidden)).astype(np.float32),
        prefix + "b": rng.standard_normal(2 * hidden).astype(np.float32),
        prefix + "U": rng.standard_normal((hidden, 2 * hidden)).astype(np.float32),
        prefix + "Wx": rng.standard_normal((620, hidden)).astype(np.float32),
        prefix + "bx": rng.standard_normal(hidden).astype(np.float32),
        prefix + "Ux": rng.standard_normal((hidden, hidden)).astype(np.float32),
    }


uni = gru_params("encoder_", 2400)
bi = {**gru_params("encoder_", 1200), **gru_params("encoder_r_", 1200)}
np.savez(f"{out}/uni_skip.npz", **uni)
np.savez_compressed(f"{out}/bi_skip.npz", **bi)

index = {w: i for i, w in enumerate(dictionary)}


def embedding(table):
    weight = torch.zeros(len(vocab) + 1, 620)
    for i, word in enumerate(vocab):
        weight[i + 1] = torch.from_numpy(table[index.get(word, index["UNK"])])
    return weight


t = lambda a: torch.from_numpy(a).t()
bayesian = {
    "embedding.weight": embedding(tables["utable"]),
    "rnn.gru_cell.weight_ir.weight": t(uni["encoder_W"])[:2400],
    "rnn.gru_cell.weight_ii.weight": t(uni["encoder_W"])[2400:],
    "rnn.gru_cell.weight_in.weight": t(uni["encoder_Wx"]),
    "rnn.gru_cell.weight_ir.bias": torch.from_numpy(uni["encoder_b"])[:2400],
    "rnn.gru_cell.weight_ii.bias": torch.from_numpy(uni["encoder_b"])[2400:],
    "rnn.gru_cell.weight_in.bias": torch.from_numpy(uni["encoder_bx"]),
    "rnn.gru_cell.weight_hr.weight": t(uni["encoder_U"])[:2400],
    "rnn.gru_cell.weight_hi.weight": t(uni["encoder_U"])[2400:],
    "rnn.gru_cell.weight_hn.weight": t(uni["encoder_Ux"]),
}


def torch_gru(p, prefix, suffix, hidden):
    return {
        "weight_ih" + suffix: torch.cat([t(p[prefix + "W"]), t(p[prefix + "Wx"])]),
        "weight_hh" + suffix: torch.cat([t(p[prefix + "U"]), t(p[prefix + "Ux"])]),
        "bias_ih" + suffix: torch.cat([torch.from_numpy(p[prefix + "b"]), torch.from_numpy(p[prefix + "bx"])]),
        "bias_hh" + suffix: torch.zeros(3 * hidden),
    }


def with_rnn(emb, params):
    return {"embedding.weight": emb, **{"rnn." + k: v for k, v in params.items()}}


expected = {
    "BayesianUniSkip": bayesian,
    "UniSkip": with_rnn(embedding(tables["utable"]), torch_gru(uni, "encoder_", "_l0", 2400)),
    "DropUniSkip": with_rnn(embedding(tables["utable"]), torch_gru(uni, "encoder_", "", 2400)),
    "BiSkip": with_rnn(embedding(tables["btable"]), {**torch_gru(bi, "encoder_", "_l0", 1200),
                                                      **torch_gru(bi, "encoder_r_", "_l0_reverse", 1200)}),
}
for variant, tensors in expected.items():
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}/expected_{variant}.safetensors")
