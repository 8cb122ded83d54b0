"""Reference prior similarity of the dynamic margin (docs/ARCHITECTURE.md, Loss), with NLTK's PorterStemmer and
sentence_bleu: p = (BLEU-4 of caption j against the captions of image i, 1 when it equals one
of them, + mean over those references of |set(ref) & set(caption)| / |set(ref)|) / 2, on
lower-cased, tokenized, punctuation- and stop-word-free, Porter-stemmed tokens.

Usage: prior.py CAPTIONS PER_IMAGE PAIRS  -> one p per line of PAIRS ("image caption").
Also: prior.py --stem WORDS -> the stem of each line of WORDS.
"""
import sys
import warnings

from nltk.stem import PorterStemmer
from nltk.translate.bleu_score import sentence_bleu

from text_reference import STOP_WORDS, caption_tokens

warnings.simplefilter("ignore")
stemmer = PorterStemmer()
if sys.argv[1] == "--stem":
    for word in open(sys.argv[2], encoding="utf-8").read().split("\n"):
        if word:
            print(stemmer.stem(word))
    sys.exit()

per_image = int(sys.argv[2])
with open(sys.argv[1], "rb") as f:
    captions = [[stemmer.stem(t) for t in caption_tokens(line) if t not in STOP_WORDS] for line in f]
for line in open(sys.argv[3]):
    i, j = map(int, line.split())
    refs, hyp = captions[i * per_image:(i + 1) * per_image], captions[j]
    bleu = 1.0 if hyp in refs else sentence_bleu(refs, hyp)
    overlap = sum(len(set(r) & set(hyp)) / len(set(r)) if r else 0.0 for r in refs) / len(refs)
    print(repr((bleu + overlap) / 2))
