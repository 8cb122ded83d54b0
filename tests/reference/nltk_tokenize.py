"""Reference tokenizer: what the original AMFMN code computes for each caption line, with the
offline parts of NLTK (untrained Punkt sentences, then NLTKWordTokenizer on each).

Usage: nltk_tokenize.py FILE...  -> one JSON list of tokens per input line (all files in turn).
Lines are read as bytes, stripped and lower-cased as bytes, then decoded (like data.py).
"""
import json
import sys

from text_reference import caption_text, word_tokenize

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for line in f:
            sys.stdout.write(json.dumps(word_tokenize(caption_text(line))) + "\n")
