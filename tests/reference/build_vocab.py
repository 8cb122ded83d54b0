"""Reference vocabulary builder: the algorithm of the original vocab.py (NLTK tokenization,
punctuation and stop words removed, words seen >= threshold times in first-seen order, then
<unk>), written with json.dump like the original.

Usage: build_vocab.py OUT THRESHOLD CAPTION_FILE...
"""
import json
import sys
from collections import Counter

from text_reference import STOP_WORDS, caption_tokens

out, threshold, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
assert len(STOP_WORDS) == 179
counter = Counter()
for path in files:
    with open(path, "rb") as f:
        for line in f:
            counter.update(t for t in caption_tokens(line) if t not in STOP_WORDS)
word2idx, idx2word = {}, {}
for word in [w for w, n in counter.items() if n >= threshold] + ["<unk>"]:
    word2idx[word] = len(word2idx) + 1
    idx2word[len(idx2word) + 1] = word
with open(out, "w") as f:
    json.dump({"word2idx": word2idx, "idx2word": idx2word, "idx": len(word2idx) + 1}, f)
