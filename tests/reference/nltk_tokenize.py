"""Reference tokenizer: what the original AMFMN code computes for each caption line, with the
offline parts of NLTK (untrained Punkt sentences, then NLTKWordTokenizer on each).

Usage: nltk_tokenize.py FILE...  -> one JSON list of tokens per input line (all files in turn).
Lines are read as bytes, stripped and lower-cased as bytes, then decoded (like data.py).
"""
import json
import sys

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer

sentences = PunktSentenceTokenizer()
words = NLTKWordTokenizer()
out = sys.stdout
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for line in f:
            text = line.strip().lower().decode("utf-8")
            tokens = [t for s in sentences.tokenize(text) for t in words.tokenize(s)]
            out.write(json.dumps(tokens) + "\n")
