"""Reference vocabulary builder: the algorithm of the original vocab.py (NLTK tokenization,
punctuation and stop words removed, words seen >= threshold times in first-seen order, then
<unk>), written with json.dump like the original.

Usage: build_vocab.py OUT THRESHOLD CAPTION_FILE...
"""
import json
import sys
from collections import Counter

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer

# NLTK's classic English stop-word list (its data files cannot be downloaded here).
STOP_WORDS = """
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves what which who whom this that that'll these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of
at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there when where why how all any
both each few more most other some such no nor not only own same so than too very s t can will
just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn
didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn
mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn
wouldn't
""".split()
PUNCTUATION = [",", ".", ":", ";", "?", "(", ")", "[", "]", "&", "!", "*", "@", "#", "$", "%"]

out, threshold, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
assert len(STOP_WORDS) == 179
sentences, words = PunktSentenceTokenizer(), NLTKWordTokenizer()
counter = Counter()
for path in files:
    with open(path, "rb") as f:
        for line in f:
            text = line.strip().lower().decode("utf-8")
            tokens = [t for s in sentences.tokenize(text) for t in words.tokenize(s)]
            counter.update(t for t in tokens if t not in PUNCTUATION and t not in STOP_WORDS)
word2idx, idx2word = {}, {}
for word in [w for w, n in counter.items() if n >= threshold] + ["<unk>"]:
    word2idx[word] = len(word2idx) + 1
    idx2word[len(idx2word) + 1] = word
with open(out, "w") as f:
    json.dump({"word2idx": word2idx, "idx2word": idx2word, "idx": len(word2idx) + 1}, f)
