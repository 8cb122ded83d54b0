"""Text processing of the original code with the offline parts of NLTK, shared by the
reference scripts: tokenization (untrained Punkt sentences, then NLTKWordTokenizer on each),
the punctuation filter and NLTK's classic stop-word list (its data files cannot be downloaded
here)."""
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

_sentences, _words = PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokenize(text):
    """nltk.word_tokenize(text) without the downloaded Punkt model."""
    return [t for s in _sentences.tokenize(text) for t in _words.tokenize(s)]


def caption_text(line):
    """A caption line as the original reads it: bytes stripped and lower-cased, then decoded."""
    return line.strip().lower().decode("utf-8")


def caption_tokens(line):
    """Tokens of a caption line without punctuation (docs/ARCHITECTURE.md, Text)."""
    return [t for t in word_tokenize(caption_text(line)) if t not in PUNCTUATION]
