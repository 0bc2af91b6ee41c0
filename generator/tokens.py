"""Token identity and words read from the text, the same rule for every tokenizer.

The scores compare tokens and words (``same_token``, ``other_sentence``,
``same_word``). Comparing WordPiece strings would make every ``[UNK]`` equal
to every other ``[UNK]`` and ``Ġstore`` differ from ``store``; so a token's
identity is the text of its span (from the fast tokenizer's offset mapping),
case-folded when the tokenizer lower-cases, and its word is the word of
BERT's BasicTokenizer (Devlin et al. 2019, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding", the released
``tokenization.py``) that contains the span's first character: the sentence
split at whitespace, with every punctuation character and every CJK
ideograph a word of its own.
"""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np


def is_punctuation(char: str) -> bool:
    """BERT's ``_is_punctuation``: ASCII 33-47, 58-64, 91-96, 123-126, or any
    Unicode category ``P*``.

    Args:
        char: one character.

    Returns:
        Whether BERT's BasicTokenizer splits it off as a word of its own.
    """
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_chinese_char(char: str) -> bool:
    """BERT's ``_is_chinese_char``: a code point in the CJK Unified Ideographs
    blocks (and their extensions and compatibility blocks).

    Args:
        char: one character.

    Returns:
        Whether BERT's BasicTokenizer makes it a word of its own.
    """
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


#: CJK ideograph ranges of BERT's ``_is_chinese_char`` (first, last code point).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


class _CharClass(dict):
    """``str.translate`` table: code point -> ``"s"`` whitespace
    (``str.isspace``), ``"p"`` a word of its own (:func:`is_punctuation` or
    :func:`is_chinese_char`), ``"a"`` any other character; each character's
    class is worked out the first time it is seen."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        kind = "s" if ch.isspace() else "p" if is_punctuation(ch) or is_chinese_char(ch) else "a"
        self[code] = kind
        return kind


_CHAR_CLASS = _CharClass()
_WORD = re.compile("p|a+")  # over the classes: a character that is a word of its own, or a run of others


def char_words(text: str) -> np.ndarray:
    """The BasicTokenizer word of every character of ``text``.

    Args:
        text: one sentence.

    Returns:
        ``[len(text)]`` int32: the 0-based index of the word each character
        belongs to, -1 for whitespace (``str.isspace``). A punctuation
        character (:func:`is_punctuation`) or CJK ideograph
        (:func:`is_chinese_char`) is a word of its own; other runs of
        non-whitespace are one word.
    """
    out = np.full(len(text), -1, dtype=np.int32)
    for word, match in enumerate(_WORD.finditer(text.translate(_CHAR_CLASS))):
        out[match.start():match.end()] = word
    return out


def lowercases(tokenizer) -> bool:
    """Whether ``tokenizer`` lower-cases its input before splitting it.

    Read from the fast tokenizer's normalizer (a ``Lowercase`` step, or
    ``BertNormalizer`` with ``lowercase``), falling back to the slow
    tokenizer's ``do_lower_case`` attribute.

    Args:
        tokenizer: a transformers fast tokenizer.

    Returns:
        True when the tokenizer lower-cases.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str()).get("normalizer")
        if spec is not None:
            return _normalizer_lowercases(spec)
    return bool(getattr(tokenizer, "do_lower_case", False))


def _normalizer_lowercases(spec: dict) -> bool:
    kind = spec.get("type")
    if kind == "Lowercase":
        return True
    if kind == "BertNormalizer":
        return bool(spec.get("lowercase", False))
    if kind == "Sequence":
        return any(_normalizer_lowercases(s) for s in spec.get("normalizers", []))
    return False


def span_identity(text: str, start: int, end: int, fold: bool) -> str:
    """tok(j): the text of a token's span, whitespace stripped, case-folded
    (``str.casefold``) when ``fold``.

    Args:
        text: the token's own sentence.
        start, end: the span's character offsets in ``text``.
        fold: whether the tokenizer lower-cases.

    Returns:
        The identity string; equal strings are the same token.
    """
    piece = text[start:end].strip()
    return piece.casefold() if fold else piece


def span_word(words: np.ndarray, start: int, end: int) -> int:
    """word(j): the word of the first non-whitespace character of the span
    ``[start, end)``, from :func:`char_words` of its sentence.

    A span of only whitespace (SentencePiece's lone ``▁``, which marks the
    start of the next word) or an empty span belongs to the word of the next
    non-whitespace character after it; -1 when the sentence has none.
    """
    for k in range(start, len(words)):
        if words[k] >= 0:
            return int(words[k])
    return -1

def pair_layout(tokenizer, a: str, b: str, encoding, index: int, fold: bool | None = None):
    """The :class:`generator.patterns.PairLayout` of one encoded pair.

    Args:
        tokenizer: the fast tokenizer that made ``encoding``.
        a, b: the pair's two sentences, as given to the tokenizer.
        encoding: the ``BatchEncoding`` of a batch of pairs, made with
            ``return_offsets_mapping=True`` and ``return_special_tokens_mask=True``.
        index: the pair's row in ``encoding``.
        fold: :func:`lowercases` of ``tokenizer``; read from it when ``None``
            (pass it when laying out many pairs: reading it serialises the
            whole tokenizer, tens of milliseconds).

    Returns:
        The layout: S = the special-tokens mask, ``segment`` from the sequence
        ids, ``identity`` = tok(j) and ``word`` = word(j) read from each
        token's span in its own sentence.
    """
    from generator.patterns import PairLayout

    ids = encoding["input_ids"][index]
    special = np.asarray(encoding["special_tokens_mask"][index], dtype=bool)
    seq = encoding.sequence_ids(index)
    offsets = encoding["offset_mapping"][index]
    fold = lowercases(tokenizer) if fold is None else fold
    texts = (a, b)
    words = (char_words(a), char_words(b))
    tokens = tuple(tokenizer.convert_ids_to_tokens(list(ids)))
    segment = np.full(len(ids), -1, dtype=np.int8)
    word = np.full(len(ids), -1, dtype=np.int32)
    identity = []
    for j, (s, sp, (start, end)) in enumerate(zip(seq, special, offsets)):
        if sp or s is None:
            identity.append(tokens[j])
            continue
        segment[j] = s
        word[j] = span_word(words[s], int(start), int(end))
        identity.append(span_identity(texts[s], int(start), int(end), fold))
    return PairLayout(tokens=tokens, segment=segment, word=word, special=special, identity=tuple(identity))
