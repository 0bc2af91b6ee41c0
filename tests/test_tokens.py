"""Token identity and words read from the text (generator/tokens.py), for
WordPiece, byte-level BPE and SentencePiece Unigram tokenizers. The BPE and
Unigram tokenizers are trained here with the ``tokenizers`` library (no
download)."""

from __future__ import annotations

import numpy as np
import pytest

from generator.config import DEFAULT_MODEL, Pair
from generator.tokens import char_words, is_chinese_char, is_punctuation, lowercases, pair_layout

TRAIN = ["I went to the store.", "At the store, I bought fresh strawberries.", "The stores sold 1,250.75 apples!",
         "Strawberries and store brands.", "He paid for it at the store"] * 20


def encode(tokenizer, a, b):
    enc = tokenizer([a], [b], return_offsets_mapping=True, return_special_tokens_mask=True,
                    split_special_tokens=True)
    return pair_layout(tokenizer, a, b, enc, 0)


def words_of(text):
    """The BasicTokenizer words, literally: split at whitespace, then split off
    each punctuation character and CJK ideograph."""
    out, current = [], ""
    for ch in text:
        if ch.isspace():
            out, current = out + ([current] if current else []), ""
        elif is_punctuation(ch) or is_chinese_char(ch):
            out, current = out + ([current] if current else []) + [ch], ""
        else:
            current += ch
    return out + ([current] if current else [])


@pytest.mark.parametrize("text", ["He paid 1,250.75 dollars.", "他在北京工作。", "straw-berries  (fresh)!", "a"])
def test_char_words_group_characters_as_basic_tokenizer_does(text):
    idx = char_words(text)
    rebuilt = {}
    for ch, w in zip(text, idx):
        if w >= 0:
            rebuilt[int(w)] = rebuilt.get(int(w), "") + ch
    assert [rebuilt[k] for k in sorted(rebuilt)] == words_of(text)
    assert all(w == -1 for ch, w in zip(text, idx) if ch.isspace())


def test_char_words_over_every_character_and_generated_text():
    """Every code point between two letters, then generated text mixing
    letters, whitespace of every kind, punctuation and CJK: the words equal the
    literal BasicTokenizer split."""
    import sys

    from hypothesis import given, settings
    from hypothesis import strategies as st

    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        want = [0, -1, 1] if ch.isspace() else [0, 1, 2] if is_punctuation(ch) or is_chinese_char(ch) else [0, 0, 0]
        assert char_words("a" + ch + "a").tolist() == want, hex(code)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.one_of(st.sampled_from(list("ab é,.-'\t\n\r\x1c\x85\xa0\u3000\u2028中文。，")),
                                      st.characters(exclude_categories=("Cs",))), max_size=40))
    def check(text):
        idx = char_words(text)
        rebuilt: dict[int, str] = {}
        for ch, w in zip(text, idx):
            if w >= 0:
                rebuilt[int(w)] = rebuilt.get(int(w), "") + ch
        assert [rebuilt[k] for k in sorted(rebuilt)] == words_of(text)
        assert all((w == -1) == ch.isspace() for ch, w in zip(text, idx))

    check()


@pytest.fixture(scope="module")
def bert():
    from generator.model import load_model

    return load_model(DEFAULT_MODEL, "cpu").tokenizer


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    raw = ByteLevelBPETokenizer()
    raw.train_from_iterator(TRAIN, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return RobertaTokenizerFast(tokenizer_object=raw._tokenizer, bos_token="<s>", eos_token="</s>",
                                sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                mask_token="<mask>", trim_offsets=True, add_prefix_space=False)


@pytest.fixture(scope="module")
def unigram():
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    raw = SentencePieceUnigramTokenizer()
    raw.train_from_iterator(TRAIN, vocab_size=60, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            unk_token="<unk>")
    return XLMRobertaTokenizerFast(tokenizer_object=raw._tokenizer, bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                   mask_token="<mask>")


def test_lowercasing_is_detected(bert, bpe, unigram):
    assert lowercases(bert) is True
    assert lowercases(bpe) is False
    assert lowercases(unigram) is False


def test_unknown_characters_are_themselves(bert):
    layout = encode(bert, "龘 and 𠀀", "☃ 龘")
    unk = [j for j, t in enumerate(layout.tokens) if t == "[UNK]"]
    assert [layout.identity[j] for j in unk] == ["龘", "𠀀", "☃", "龘"]
    ids = layout.token_ids()
    assert ids[unk[0]] == ids[unk[3]] and ids[unk[0]] != ids[unk[1]] and ids[unk[1]] != ids[unk[2]]


def test_literal_sep_is_text_not_a_separator(bert):
    layout = encode(bert, "Before [SEP] after", "Second")
    assert int(layout.special.sum()) == 3  # [CLS], the real [SEP] after a, the final [SEP]
    assert layout.special[0] and layout.special[-1]
    typed = [layout.identity[j] for j in range(layout.n) if layout.segment[j] == 0]
    assert typed == ["before", "[", "sep", "]", "after"]
    # "[", "sep", "]" are three words: brackets are punctuation
    words = [int(layout.word[j]) for j in range(layout.n) if layout.segment[j] == 0]
    assert words == [0, 1, 2, 3, 4]


def test_chinese_characters_and_punctuation_inside_numbers_are_words(bert):
    layout = encode(bert, "他在北京", "It cost 1,250.75 dollars.")
    a = [(layout.identity[j], int(layout.word[j])) for j in range(layout.n) if layout.segment[j] == 0]
    assert a == [("他", 0), ("在", 1), ("北", 2), ("京", 3)]
    b = [(layout.identity[j], int(layout.word[j])) for j in range(layout.n) if layout.segment[j] == 1]
    assert b == [("it", 0), ("cost", 1), ("1", 2), (",", 3), ("250", 4), (".", 5), ("75", 6), ("dollars", 7),
                 (".", 8)]


def test_word_pieces_share_their_word(bert):
    layout = encode(bert, "I bought strawberries", "ok")
    pieces = [j for j in range(layout.n) if layout.segment[j] == 0 and layout.word[j] == 2]
    assert len(pieces) >= 2  # strawberries is split into pieces
    assert "".join(layout.identity[j] for j in pieces) == "strawberries"


@pytest.mark.parametrize("name", ["bpe", "unigram"])
def test_prefixed_tokens_equal_their_text(name, request):
    tokenizer = request.getfixturevalue(name)
    layout = encode(tokenizer, "store the store", "At the Store, stores")
    prefix = "Ġ" if name == "bpe" else "▁"
    assert any(t.startswith(prefix) for t in layout.tokens)
    assert layout.special[0] and layout.special[-1]
    assert not any(layout.identity[j].startswith((" ", prefix)) for j in range(layout.n) if not layout.special[j])
    # the words are BasicTokenizer words whatever the tokenizer: "store the store" is words 0, 1, 2
    a = [j for j in range(layout.n) if layout.segment[j] == 0]
    assert sorted({int(layout.word[j]) for j in a}) == [0, 1, 2]
    first_of_word = {}
    for j in a:
        first_of_word.setdefault(int(layout.word[j]), j)
    ids = layout.token_ids()
    # "store" at the start (no prefix) and " store" later (prefixed) are the same token when both are single pieces
    s0, s2 = first_of_word[0], first_of_word[2]
    if layout.identity[s0] == "store" and layout.identity[s2] == "store":
        assert ids[s0] == ids[s2]
    # case is kept: "Store" differs from "store" for these tokenizers
    b = [j for j in range(layout.n) if layout.segment[j] == 1]
    assert any(layout.identity[j].startswith("S") for j in b)
    # punctuation stays a word of its own
    comma = [j for j in b if layout.identity[j] == ","]
    assert comma and all(layout.word[j] == 3 for j in comma)
