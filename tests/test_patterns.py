"""Unit tests of generator.patterns: every score on hand-built attention
matrices whose answers are worked out by hand here, the batched scorer against
the reference, the corpus sums, the labelling rules, and one check against the
real packaged model (Vig's running example)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from generator.config import PATTERNS, Pair
from generator.patterns import (
    MIXED,
    BatchMasks,
    PairLayout,
    ScoreSums,
    batch_scores,
    classify,
    classify_all,
    consistency,
    nearest_pattern,
    top_pairs,
)

NAN = math.nan
IDX = {p: k for k, p in enumerate(PATTERNS)}


def pair_scores_reference(attention: np.ndarray, layout: PairLayout) -> np.ndarray:
    """Scores of one head on one pair, computed literally from the definitions.

    ``attention``: ``[n, n]`` (rows sum to 1). Returns ``[7]`` float64 in
    :data:`PATTERNS` order, NaN where a score is undefined. Slow (Python loops);
    the yardstick the batched :func:`generator.patterns.batch_scores` is tested against.
    """
    A = np.asarray(attention, dtype=np.float64)
    n = layout.n
    tok = list(layout.identities())
    Q = [i for i in range(n) if not layout.special[i]]
    S = [j for j in range(n) if layout.special[j]]
    seg, word = layout.segment, layout.word

    def mean(values):
        return float(np.mean(values)) if values else math.nan

    out = {
        "next": mean([A[i, i + 1] for i in Q if i + 1 < n]),
        "previous": mean([A[i, i - 1] for i in Q if i >= 1]),
        "delimiter": mean([sum(A[i, j] for j in S) for i in Q]),
        "same_token": mean([sum(A[i, j] for j in Q if tok[j] == tok[i]) for i in Q]),
    }
    other = []
    for i in Q:
        js = [j for j in Q if tok[j] == tok[i] and seg[j] != seg[i]]
        if js:
            other.append(sum(A[i, j] for j in js))
    out["other_sentence"] = mean(other)
    pieces = []
    for i in Q:
        js = [j for j in Q if j != i and seg[j] == seg[i] and word[j] == word[i]]
        if js:
            pieces.append(sum(A[i, j] for j in js))
    out["same_word"] = mean(pieces)
    entropies = []
    for i in Q:
        h = -sum(a * math.log(a) for a in A[i] if a > 0)
        entropies.append(h / math.log(n))
    out["broad"] = mean(entropies)
    return np.array([out[p] for p in PATTERNS], dtype=np.float64)


def layout(tokens, segment, word) -> PairLayout:
    """A PairLayout built by hand; special = segment -1."""
    segment = np.array(segment, dtype=np.int8)
    return PairLayout(tokens=tuple(tokens), segment=segment, word=np.array(word, dtype=np.int32),
                      special=segment == -1)


# [CLS] i went to the store . [SEP] at the store [SEP]
#   0   1  2    3  4   5    6   7   8   9  10    11
SHORT = layout(
    ["[CLS]", "i", "went", "to", "the", "store", ".", "[SEP]", "at", "the", "store", "[SEP]"],
    [-1, 0, 0, 0, 0, 0, 0, -1, 1, 1, 1, -1],
    [-1, 0, 1, 2, 3, 4, 5, -1, 0, 1, 2, -1],
)
SHORT_Q = [1, 2, 3, 4, 5, 6, 8, 9, 10]  # the 9 non-special positions

# Vig's pair as the uncased WordPiece tokenizer splits it (n = 19):
# [CLS] i went to the store . [SEP] at the store , i bought fresh straw ##berries . [SEP]
#   0   1  2    3  4   5    6   7   8   9  10  11 12  13     14    15     16     17   18
VIG_TOKENS = ["[CLS]", "i", "went", "to", "the", "store", ".", "[SEP]", "at", "the", "store", ",", "i", "bought",
              "fresh", "straw", "##berries", ".", "[SEP]"]
VIG = layout(
    VIG_TOKENS,
    [-1, 0, 0, 0, 0, 0, 0, -1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1],
    [-1, 0, 1, 2, 3, 4, 5, -1, 0, 1, 2, 3, 4, 5, 6, 7, 7, 8, -1],
)

# No token shared across the sentences, no split word.
DISJOINT = layout(["[CLS]", "red", "cars", "[SEP]", "blue", "boats", "[SEP]"],
                  [-1, 0, 0, -1, 1, 1, -1], [-1, 0, 1, -1, 0, 1, -1])

# "the" twice inside sentence a only; "cat" in both; a word in three pieces in b.
# [CLS] the dog saw the cat [SEP] a cat un ##bel ##ievable [SEP]
#   0    1   2   3   4   5    6   7  8   9   10      11      12
REPEAT = layout(
    ["[CLS]", "the", "dog", "saw", "the", "cat", "[SEP]", "a", "cat", "un", "##bel", "##ievable", "[SEP]"],
    [-1, 0, 0, 0, 0, 0, -1, 1, 1, 1, 1, 1, -1],
    [-1, 0, 1, 2, 3, 4, -1, 0, 1, 2, 2, 2, -1],
)


def onehot(n: int, targets: dict[int, int]) -> np.ndarray:
    """Rows i -> one-hot at targets[i]; other rows uniform (they must not matter)."""
    A = np.full((n, n), 1.0 / n)
    for i, j in targets.items():
        A[i] = 0.0
        A[i, j] = 1.0
    return A


def scores(A, lay) -> dict[str, float]:
    """Reference and batched scores of one matrix; asserts they agree and
    returns them by name."""
    ref = pair_scores_reference(A, lay)
    bat = batch_scores(torch.tensor(A, dtype=torch.float32)[None, None], BatchMasks.from_layouts([lay], lay.n))
    assert bat.shape == (1, 1, 7) and bat.dtype == torch.float32
    np.testing.assert_allclose(bat[0, 0].numpy(), ref, atol=1e-6, equal_nan=True)
    return dict(zip(PATTERNS, ref.tolist()))


def expect(got: dict[str, float], **want) -> None:
    for name, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[name]), (name, got[name])
        else:
            assert got[name] == pytest.approx(value, abs=1e-12), (name, got[name], value)


# ---------------------------------------------------------------- layouts


def test_layout_masks_by_hand():
    m = SHORT.masks()
    assert m["query"].tolist() == [i in SHORT_Q for i in range(12)]
    assert m["special"].tolist() == [i in (0, 7, 11) for i in range(12)]
    # same_token: "the" 4<->9, "store" 5<->10, and the diagonal of queries
    expected_same = {(i, i) for i in SHORT_Q} | {(4, 9), (9, 4), (5, 10), (10, 5)}
    assert {tuple(x) for x in np.argwhere(m["same_token"]).tolist()} == expected_same
    assert {tuple(x) for x in np.argwhere(m["other_sentence"]).tolist()} == {(4, 9), (9, 4), (5, 10), (10, 5)}
    # word ids repeat across sentences (i/at = 0, ...) but no word is split
    assert not m["same_word"].any()
    mv = VIG.masks()
    assert {tuple(x) for x in np.argwhere(mv["same_word"]).tolist()} == {(15, 16), (16, 15)}


def test_token_ids_are_case_insensitive():
    lay = layout(["[CLS]", "The", "the", "THE", "cat", "[SEP]"], [-1, 0, 0, 0, 0, -1], [-1, 0, 1, 2, 3, -1])
    ids = lay.token_ids()
    assert ids[1] == ids[2] == ids[3] and ids[4] != ids[1]


def test_unknown_tokens_are_the_same_token_only_when_their_texts_are():
    # [CLS] [UNK]=你 [UNK]=好 [SEP] [UNK]=你 [UNK]=们 [SEP]: identity is the span's text
    lay = PairLayout(tokens=("[CLS]", "[UNK]", "[UNK]", "[SEP]", "[UNK]", "[UNK]", "[SEP]"),
                     segment=np.array([-1, 0, 0, -1, 1, 1, -1], dtype=np.int8),
                     word=np.array([-1, 0, 1, -1, 0, 1, -1], dtype=np.int32),
                     special=np.array([True, False, False, True, False, False, True]),
                     identity=("[CLS]", "你", "好", "[SEP]", "你", "们", "[SEP]"))
    m = lay.masks()
    assert {tuple(x) for x in np.argwhere(m["other_sentence"]).tolist()} == {(1, 4), (4, 1)}
    # every query looks at the other [UNK] of its sentence: no same token there
    A = onehot(7, {1: 2, 2: 1, 4: 5, 5: 4})
    expect(scores(A, lay), same_token=0.0, other_sentence=0.0, previous=0.5, next=0.5)
    # with WordPiece strings, every [UNK] would have equalled every other
    plain = PairLayout(tokens=lay.tokens, segment=lay.segment, word=lay.word, special=lay.special)
    assert plain.masks()["other_sentence"].sum() == 8


def test_prefixed_byte_level_tokens_compare_by_their_text():
    # <s> Ġstore s </s></s> store </s>: "Ġstore" and "store" both read "store" in the text
    lay = PairLayout(tokens=("<s>", "Ġstore", "s", "</s>", "</s>", "store", "</s>"),
                     segment=np.array([-1, 0, 0, -1, -1, 1, -1], dtype=np.int8),
                     word=np.array([-1, 0, 0, -1, -1, 0, -1], dtype=np.int32),
                     special=np.array([True, False, False, True, True, False, True]),
                     identity=("<s>", "store", "s", "</s>", "</s>", "store", "</s>"))
    A = onehot(7, {1: 5, 5: 1, 2: 1})
    # same_word: "store" (1) puts nothing on its piece "s", "s" (2) everything on "store"
    expect(scores(A, lay), other_sentence=1.0, same_word=0.5)


# ------------------------------------------------------------------- next


def test_next_pure():
    A = onehot(12, {i: i + 1 for i in range(11)} | {11: 0})
    got = scores(A, SHORT)
    # rows 6 and 10 point at [SEP] (7, 11): 2 of 9 rows are delimiter attention
    expect(got, next=1.0, previous=0.0, same_token=0.0, other_sentence=0.0, same_word=NAN,
           delimiter=2 / 9, broad=0.0)


def test_next_mixed():
    # query row q_k puts w_k on its next token and the rest on itself
    w = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    A = np.full((12, 12), 1 / 12)
    for i, wk in zip(SHORT_Q, w):
        A[i] = 0.0
        A[i, i + 1] = wk
        A[i, i] = 1 - wk
    got = scores(A, SHORT)
    h = [-(x * math.log(x) + (1 - x) * math.log(1 - x)) / math.log(12) for x in w]
    expect(got, next=4.5 / 9, previous=0.0, same_token=4.5 / 9,
           # row 6 -> [SEP] 7 with 0.4, row 10 -> [SEP] 11 with 0.1
           delimiter=(0.4 + 0.1) / 9,
           # rows 4, 5, 9, 10 have a cross-sentence twin but give it nothing
           other_sentence=0.0, same_word=NAN, broad=sum(h) / 9)


# --------------------------------------------------------------- previous


def test_previous_pure():
    A = onehot(12, {i: i - 1 for i in range(1, 12)} | {0: 0})
    got = scores(A, SHORT)
    # rows 1 and 8 point at [CLS] 0 and [SEP] 7
    expect(got, next=0.0, previous=1.0, same_token=0.0, other_sentence=0.0, same_word=NAN,
           delimiter=2 / 9, broad=0.0)


def test_previous_mixed():
    # rows 1..6: 0.5 previous, 0.5 [CLS]; rows 8..10: 1.0 previous.
    # row 1's previous *is* [CLS], so row 1 gives 1.0 to previous and to delimiter.
    A = np.full((12, 12), 1 / 12)
    for i in SHORT_Q:
        A[i] = 0.0
        if i <= 6:
            A[i, i - 1] += 0.5
            A[i, 0] += 0.5
        else:
            A[i, i - 1] = 1.0
    got = scores(A, SHORT)
    expect(got, previous=(1.0 + 5 * 0.5 + 3 * 1.0) / 9,
           delimiter=(1.0 + 5 * 0.5 + 1.0 + 0 + 0) / 9,  # row 1 all, rows 2-6 half, row 8 -> [SEP] 7
           next=0.0, same_token=0.0,
           broad=(5 * math.log(2) / math.log(12)) / 9)


# -------------------------------------------------------------- same_token


def test_same_token_pure_self():
    got = scores(np.eye(12), SHORT)
    expect(got, next=0.0, previous=0.0, same_token=1.0, other_sentence=0.0, same_word=NAN,
           delimiter=0.0, broad=0.0)


def test_same_token_mixed_excludes_specials():
    # the [SEP] rows attend to each other ([SEP] == [SEP]) but are not queries;
    # a query attending to a [SEP] key never counts as same token.
    A = np.eye(12)
    A[7] = 0.0
    A[7, 11] = 1.0
    A[4] = 0.0
    A[4, 4], A[4, 9], A[4, 0] = 0.25, 0.25, 0.5  # "the": self + twin, rest on [CLS]
    A[6] = 0.0
    A[6, 7] = 1.0  # "." -> [SEP]
    got = scores(A, SHORT)
    expect(got, same_token=(7 * 1.0 + 0.5 + 0.0) / 9,
           other_sentence=(0.25 + 1.0 * 0 + 0 + 0) / 4,  # row 4 gives 0.25 to 9; rows 5, 9, 10 only to themselves
           delimiter=(0.5 + 1.0) / 9)


def test_same_token_within_sentence_counts_but_is_not_other_sentence():
    # REPEAT: "the" (1, 4) only in sentence a; "cat" (5, 8) in both
    A = np.eye(13)
    A[1] = 0.0
    A[1, 4] = 1.0
    A[4] = 0.0
    A[4, 1] = 1.0
    A[5] = 0.0
    A[5, 8] = 0.5
    A[5, 12] = 0.5
    got = scores(A, REPEAT)
    queries = 10  # 13 tokens - 3 specials
    expect(got, same_token=(9 * 1.0 + 0.5) / queries,
           other_sentence=(0.5 + 1.0 * 0) / 2)  # rows 5 (0.5 to 8) and 8 (only itself)


# ---------------------------------------------------------- other_sentence


def test_other_sentence_pure():
    # twins look at each other across the [SEP]; the rest look at themselves
    A = np.eye(12)
    for i, j in ((4, 9), (9, 4), (5, 10), (10, 5)):
        A[i] = 0.0
        A[i, j] = 1.0
    got = scores(A, SHORT)
    expect(got, other_sentence=1.0, same_token=1.0, next=0.0, previous=0.0, delimiter=0.0, broad=0.0)


def test_other_sentence_mixed():
    A = np.eye(12)
    A[4] = 0.0
    A[4, 9], A[4, 0] = 0.5, 0.5
    A[5] = 0.0
    A[5, 10], A[5, 4] = 0.25, 0.75
    A[9] = 0.0
    A[9, 4] = 1.0
    A[10] = 0.0
    A[10, 11] = 1.0
    got = scores(A, SHORT)
    expect(got, other_sentence=(0.5 + 0.25 + 1.0 + 0.0) / 4,
           same_token=(5 * 1.0 + 0.5 + 0.25 + 1.0 + 0.0) / 9,
           previous=0.75 / 9, delimiter=(0.5 + 1.0) / 9)


def test_other_sentence_is_case_insensitive():
    lay = layout(["[CLS]", "The", "dog", "[SEP]", "the", "cat", "[SEP]"], [-1, 0, 0, -1, 1, 1, -1],
                 [-1, 0, 1, -1, 0, 1, -1])
    A = onehot(7, {1: 4, 4: 1, 2: 2, 5: 5})
    expect(scores(A, lay), other_sentence=1.0, same_token=1.0)


def test_other_sentence_undefined_without_shared_token():
    rng = np.random.default_rng(0)
    A = rng.random((7, 7))
    A /= A.sum(1, keepdims=True)
    got = scores(A, DISJOINT)
    expect(got, other_sentence=NAN, same_word=NAN)
    assert not math.isnan(got["same_token"])


# --------------------------------------------------------------- same_word


def test_same_word_pure():
    A = np.eye(19)
    A[15] = 0.0
    A[15, 16] = 1.0
    A[16] = 0.0
    A[16, 15] = 1.0
    got = scores(A, VIG)
    expect(got, same_word=1.0, next=1 / 16, previous=1 / 16, same_token=14 / 16)


def test_same_word_mixed():
    A = np.eye(19)
    A[15] = 0.0
    A[15, 16], A[15, 15] = 0.75, 0.25  # self is not "another piece"
    A[16] = 0.0
    A[16, 15], A[16, 18] = 0.5, 0.5
    expect(scores(A, VIG), same_word=(0.75 + 0.5) / 2)


def test_same_word_three_pieces():
    # un ##bel ##ievable (9, 10, 11): each other piece counts, self does not
    A = np.eye(13)
    A[9] = 0.0
    A[9, 10], A[9, 11] = 0.5, 0.5  # 1.0
    A[10] = 0.0
    A[10, 10], A[10, 11] = 0.5, 0.5  # 0.5
    A[11] = 0.0
    A[11, 8] = 1.0  # "cat" is the same sentence but another word: 0
    expect(scores(A, REPEAT), same_word=(1.0 + 0.5 + 0.0) / 3)


def test_same_word_undefined_without_split_word():
    # SHORT has equal word ids in both sentences (i/at = 0, ...) but no split word
    A = np.full((12, 12), 1 / 12)
    A[1] = 0.0
    A[1, 8] = 1.0  # word 0 of a -> word 0 of b: different words
    expect(scores(A, SHORT), same_word=NAN)


# --------------------------------------------------------------- delimiter


def test_delimiter_pure_and_broad_of_two():
    A = np.zeros((12, 12))
    A[:, 0] = 0.5
    A[:, 11] = 0.5
    got = scores(A, SHORT)
    # row 10's next token and row 1's previous token are delimiters: 0.5 each
    expect(got, delimiter=1.0, broad=math.log(2) / math.log(12), next=0.5 / 9, previous=0.5 / 9, same_token=0.0,
           other_sentence=0.0, same_word=NAN)


def test_delimiter_mixed_counts_every_special():
    A = np.eye(12)
    A[1] = 0.0
    A[1, 0], A[1, 7], A[1, 11] = 0.2, 0.3, 0.5  # all three specials: 1.0
    A[2] = 0.0
    A[2, 7], A[2, 2] = 0.25, 0.75
    A[3] = 0.0
    A[3, 11], A[3, 4] = 0.5, 0.5
    expect(scores(A, SHORT), delimiter=(1.0 + 0.25 + 0.5) / 9, next=0.5 / 9, same_token=(6 + 0.75) / 9)


# ------------------------------------------------------------------- broad


def test_broad_uniform_is_one_and_one_hot_is_zero():
    expect(scores(np.full((12, 12), 1 / 12), SHORT), broad=1.0, delimiter=3 / 12, next=1 / 12, previous=1 / 12)
    expect(scores(np.full((19, 19), 1 / 19), VIG), broad=1.0)
    # one-hot query rows, uniform special rows: special rows do not count
    expect(scores(onehot(12, {i: 0 for i in SHORT_Q}), SHORT), broad=0.0, delimiter=1.0)


def test_broad_mixed():
    # 3 rows uniform over 4 keys, 3 rows (1/2, 1/4, 1/4), 3 rows one-hot
    A = np.full((12, 12), 1 / 12)
    for k, i in enumerate(SHORT_Q):
        A[i] = 0.0
        if k < 3:
            A[i, [0, 1, 2, 3]] = 0.25
        elif k < 6:
            A[i, [0, 1, 2]] = [0.5, 0.25, 0.25]
        else:
            A[i, 0] = 1.0
    expected = (3 * math.log(4) + 3 * 1.5 * math.log(2) + 0) / math.log(12) / 9
    expect(scores(A, SHORT), broad=expected)


# ------------------------------------------------------ batch vs reference


def _random_attention(rng, n: int, sparse: bool) -> np.ndarray:
    A = rng.random((n, n)) ** 3
    if sparse:  # exact zeros exercise 0 ln 0 = 0
        A[rng.random((n, n)) < 0.4] = 0.0
        A[np.arange(n), rng.integers(0, n, n)] += 0.5
    return A / A.sum(1, keepdims=True)


def test_batch_matches_reference_on_padded_batch():
    rng = np.random.default_rng(1234)
    tiny = layout(["[CLS]", "a", "[SEP]", "a", "[SEP]"], [-1, 0, -1, 1, -1], [-1, 0, -1, 0, -1])
    layouts = [SHORT, VIG, DISJOINT, REPEAT, tiny, VIG]
    B, K, T = len(layouts), 4, 22
    att = np.empty((B, K, T, T), dtype=np.float32)
    expected = np.empty((B, K, 7))
    for b, lay in enumerate(layouts):
        n = lay.n
        for k in range(K):
            A = _random_attention(rng, n, sparse=k % 2 == 1)
            padded = rng.random((T, T)) * 5  # padded rows: anything finite
            padded[:n, :] = 0.0  # padded keys of real rows: exactly zero
            padded[:n, :n] = A
            att[b, k] = padded
            expected[b, k] = pair_scores_reference(A, lay)
    masks = BatchMasks.from_layouts(layouts, T)
    assert masks.length.tolist() == [lay.n for lay in layouts]
    got = batch_scores(torch.from_numpy(att), masks)
    assert got.shape == (B, K, 7) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, rtol=0, equal_nan=True)
    # NaN exactly where undefined
    assert np.isnan(expected[2, :, IDX["other_sentence"]]).all()
    assert np.isnan(expected[0, :, IDX["same_word"]]).all()
    assert not np.isnan(expected[1]).any()


def test_batch_without_padding_and_float64_input():
    rng = np.random.default_rng(7)
    A = np.stack([_random_attention(rng, 19, sparse=False) for _ in range(3)])
    got = batch_scores(torch.from_numpy(A)[None], BatchMasks.from_layouts([VIG], 19))
    want = np.stack([pair_scores_reference(a, VIG) for a in A])
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-6, equal_nan=True)


def test_batch_matches_reference_when_first_and_last_tokens_are_not_special():
    lay = layout(["a", "b", "c"], [0, 0, 0], [0, 1, 2])
    nxt = onehot(3, {0: 1, 1: 2, 2: 0})
    prv = onehot(3, {0: 2, 1: 0, 2: 1})
    masks = BatchMasks.from_layouts([lay], 3)
    for A in (nxt, prv):
        ref = pair_scores_reference(A, lay)
        got = batch_scores(torch.tensor(A)[None, None], masks)[0, 0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-6, equal_nan=True)


# ---------------------------------------------------------------- ScoreSums


def test_score_sums_shards_merge_exactly():
    rng = np.random.default_rng(5)
    scores_ = rng.random((10, 2, 3, 7))
    scores_[rng.random(scores_.shape) < 0.3] = np.nan
    scores_[:, 1, 2, IDX["same_word"]] = np.nan  # undefined on every pair
    whole = ScoreSums.zeros(2, 3)
    whole.add(scores_)
    a, b = ScoreSums.zeros(2, 3), ScoreSums.zeros(2, 3)
    a.add(scores_[:4])
    a.add(scores_[4:6])
    b.add(scores_[6:])
    a_total, b_total = a.total.copy(), b.total.copy()
    merged = a + b
    np.testing.assert_allclose(merged.total, whole.total, rtol=1e-12)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_array_equal(whole.count, (~np.isnan(scores_)).sum(0))
    defined = ~np.isnan(scores_)
    by_hand = np.full((2, 3, 7), np.nan)
    for idx in np.ndindex(2, 3, 7):
        col = scores_[(slice(None), *idx)]
        if defined[(slice(None), *idx)].any():
            by_hand[idx] = col[~np.isnan(col)].mean()
    assert np.isnan(by_hand[1, 2, IDX["same_word"]]) and np.isnan(by_hand).sum() == 1
    np.testing.assert_allclose(merged.mean(), by_hand, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(whole.mean(), by_hand, rtol=1e-12, equal_nan=True)
    # + does not modify its operands
    np.testing.assert_array_equal(a.total, a_total)
    np.testing.assert_array_equal(b.total, b_total)


def test_score_sums_mean_with_undefined_entries():
    s = ScoreSums.zeros(1, 2)
    p1 = np.full((1, 1, 2, 7), np.nan)
    p2 = np.full((1, 1, 2, 7), np.nan)
    p3 = np.full((1, 1, 2, 7), np.nan)
    p1[0, 0, 0, IDX["next"]], p2[0, 0, 0, IDX["next"]], p3[0, 0, 0, IDX["next"]] = 0.2, 0.4, 0.9
    p1[0, 0, 0, IDX["same_word"]], p3[0, 0, 0, IDX["same_word"]] = 0.5, 0.25  # undefined on p2
    p2[0, 0, 1, IDX["broad"]] = 0.7  # defined once
    for p in (p1, p2, p3):
        s.add(p)
    m = s.mean()
    assert m.shape == (1, 2, 7)
    assert m[0, 0, IDX["next"]] == pytest.approx(1.5 / 3)
    assert m[0, 0, IDX["same_word"]] == pytest.approx(0.75 / 2)
    assert m[0, 1, IDX["broad"]] == pytest.approx(0.7)
    assert s.count[0, 0, IDX["same_word"]] == 2
    assert np.isnan(m[0, 0, IDX["other_sentence"]]) and np.isnan(m[0, 1, IDX["next"]])
    assert np.isnan(ScoreSums.zeros(2, 2).mean()).all()


# ----------------------------------------------------------------- classify

TH = {"next": 0.5, "previous": 0.5, "same_token": 0.3, "other_sentence": 0.25, "same_word": 0.7,
      "delimiter": 0.6, "broad": 0.8}


def vec(**values) -> np.ndarray:
    out = np.zeros(7)
    for name, v in values.items():
        out[IDX[name]] = v
    return out


def test_classify_ratio_rule_not_raw_score():
    # the brief's example: same_word does not reach 0.7
    assert classify(vec(previous=0.98, same_word=0.64), TH) == "previous"
    # both qualify; raw score says same_word (0.9 > 0.7), ratio says previous (1.4 > 1.29)
    assert classify(vec(previous=0.7, same_word=0.9), TH) == "previous"
    # delimiter 0.9/0.6 = 1.5 beats next 0.7/0.5 = 1.4 and broad 0.85/0.8
    assert classify(vec(next=0.7, delimiter=0.9, broad=0.85), TH) == "delimiter"


def test_classify_ties_go_to_the_earlier_pattern():
    th = dict.fromkeys(PATTERNS, 0.5)
    assert classify(vec(next=0.75, broad=0.75), th) == "next"
    assert classify(vec(previous=0.75, delimiter=0.75), th) == "previous"
    assert classify(vec(same_word=0.75, same_token=0.75), th) == "same_token"
    th2 = {**th, "other_sentence": 0.25}
    assert classify(vec(other_sentence=0.375, broad=0.75), th2) == "other_sentence"  # 1.5 both


def test_classify_at_threshold_qualifies_and_below_is_mixed():
    assert classify(vec(next=0.5), TH) == "next"
    assert classify(vec(next=0.49, previous=0.49, same_token=0.29, other_sentence=0.24, same_word=0.69,
                        delimiter=0.59, broad=0.79), TH) == MIXED
    assert classify(np.zeros(7), TH) == MIXED


def test_classify_nan_never_qualifies():
    assert classify(np.full(7, np.nan), TH) == MIXED
    assert classify(np.full(7, np.nan), dict.fromkeys(PATTERNS, 0.0)) == MIXED
    s = vec(next=0.6)
    s[IDX["other_sentence"]] = np.nan
    assert classify(s, {**TH, "other_sentence": 0.0}) == "next"


def test_classify_threshold_zero():
    th = {**TH, "broad": 0.0}
    # a threshold of 0 qualifies any defined score, even 0, and wins (ratio infinite)
    assert classify(vec(next=1.0, broad=0.0), th) == "broad"
    th2 = {**TH, "same_word": 0.0, "broad": 0.0}
    assert classify(vec(next=1.0), th2) == "same_word"  # earlier of the two infinite ratios


def test_classify_all_shape():
    head = np.stack([vec(next=0.9), vec(), vec(broad=0.95), vec(same_token=0.31)]).reshape(2, 2, 7)
    labels = classify_all(head, TH)
    assert labels.shape == (2, 2)
    assert labels.tolist() == [["next", MIXED], ["broad", "same_token"]]


def test_nearest_pattern_ignores_threshold_and_nan():
    s = vec(next=0.4, same_word=0.6, broad=0.5)  # ratios 0.8, 0.857, 0.625
    s[IDX["other_sentence"]] = np.nan
    assert classify(s, TH) == MIXED
    assert nearest_pattern(s, TH) == "same_word"


# ----------------------------------------------------- consistency, top_pairs


def test_consistency_pattern_label():
    ps = np.zeros((5, 7))
    ps[:, IDX["same_word"]] = [0.8, np.nan, 0.7, 0.2, np.nan]
    assert consistency(ps, "same_word", TH) == pytest.approx(2 / 3)
    ps[:, IDX["same_word"]] = np.nan
    assert consistency(ps, "same_word", TH) is None
    assert consistency(np.zeros((0, 7)), "next", TH) is None


def test_consistency_mixed_label():
    ps = np.stack([vec(), vec(next=0.9), vec(broad=0.1), vec(previous=0.2)])
    assert consistency(ps, MIXED, TH) == pytest.approx(3 / 4)
    assert consistency(np.zeros((0, 7)), MIXED, TH) is None


def test_top_pairs_nan_last_ties_by_index():
    ps = np.zeros((6, 7))
    ps[:, IDX["previous"]] = [0.2, np.nan, 0.9, 0.2, np.nan, 0.5]
    assert top_pairs(ps, "previous", 6) == [2, 5, 0, 3, 1, 4]
    assert top_pairs(ps, "previous", 2) == [2, 5]
    assert top_pairs(ps, "previous", 10) == [2, 5, 0, 3, 1, 4]
    assert top_pairs(ps, "next", 3) == [0, 1, 2]  # all tied
    assert top_pairs(np.zeros((0, 7)), "next", 3) == []


# ------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def minilm():
    from generator.model import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")


def test_real_model_vig_previous_head(minilm):
    from generator.model import encode_pairs
    from generator.scoring import score_batch

    pair = Pair(id="vig", a="I went to the store.", b="At the store, I bought fresh strawberries.")
    (enc,) = encode_pairs(minilm, [pair], 128)
    lay = enc.layout
    assert list(lay.tokens) == VIG_TOKENS
    assert lay.segment.tolist() == VIG.segment.tolist()
    assert lay.special.tolist() == VIG.special.tolist()
    straw, berries = VIG_TOKENS.index("straw"), VIG_TOKENS.index("##berries")
    assert lay.word[straw] == lay.word[berries] and lay.segment[straw] == lay.segment[berries]
    words = {(int(s), int(w)) for s, w in zip(lay.segment[~lay.special], lay.word[~lay.special])}
    assert len(words) == 6 + 9  # 16 word pieces, 15 words (word ids restart in sentence b)
    s = score_batch(minilm, [enc])
    assert s.shape == (1, minilm.layers, minilm.heads, 7)
    assert s[0, 0, 2, IDX["previous"]] > 0.9
    assert np.isnan(s[0, :, :, IDX["same_word"]]).sum() == 0  # straw/##berries defines it everywhere
