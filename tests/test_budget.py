"""Unit tests of generator.budget: the category of every cell of a hand-built
pair (worked out by hand from the first-match rules), budgets of one-hot
attention matrices whose answers are counted by hand, the batched budget
against the literal reference (shares sum to 1), and the mergeable sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.budget import (
    CATEGORIES,
    CATEGORY_NAMES,
    BudgetMaps,
    BudgetSums,
    batch_budget,
    budget_reference,
    category_map,
)
from generator.patterns import PairLayout

K = {name: k for k, name in enumerate(CATEGORY_NAMES)}


def layout(tokens, segment, word) -> PairLayout:
    segment = np.array(segment, dtype=np.int8)
    return PairLayout(tokens=tuple(tokens), segment=segment, word=np.array(word, dtype=np.int32),
                      special=segment == -1)


# [CLS] the straw ##berries the , [SEP] the red [SEP]
#   0    1    2       3      4  5   6    7   8    9
PAIR = layout(
    ["[CLS]", "the", "straw", "##berries", "the", ",", "[SEP]", "the", "red", "[SEP]"],
    [-1, 0, 0, 0, 0, 0, -1, 1, 1, -1],
    [-1, 0, 1, 1, 2, 3, -1, 0, 1, -1],
)
Q = [1, 2, 3, 4, 5, 7, 8]


def test_categories_are_the_issue_eleven_in_order_with_distinct_colours():
    assert CATEGORY_NAMES == ("self", "cls", "sep", "word_pieces", "previous", "next", "copies",
                              "copies_other_sentence", "punctuation", "own_sentence", "other_sentence")
    colours = [c.colour.lower() for c in CATEGORIES]
    assert len(set(colours)) == len(colours)
    assert all(c.title and c.description for c in CATEGORIES)


def test_category_map_first_match_wins():
    m = category_map(PAIR)
    rows = {
        # query "the" (1): j3 is neither next nor its word -> own sentence; j4 and j7 are copies
        1: ["cls", "self", "next", "own_sentence", "copies", "punctuation", "sep", "copies_other_sentence",
            "other_sentence", "sep"],
        # query "straw" (2): "##berries" is the next token but word_pieces comes first
        2: ["cls", "previous", "self", "word_pieces", "own_sentence", "punctuation", "sep", "other_sentence",
            "other_sentence", "sep"],
        # query "the" (7) in sentence b: [SEP] at j = i - 1 is still sep
        7: ["cls", "copies_other_sentence", "other_sentence", "other_sentence", "copies_other_sentence",
            "punctuation", "sep", "self", "next", "sep"],
    }
    for i, names in rows.items():
        assert [CATEGORY_NAMES[c] for c in m[i]] == names, i
    # special rows are no queries
    assert (m[[0, 6, 9]] == -1).all()
    assert (m[Q] >= 0).all()


def test_one_hot_previous_attention_counted_by_hand():
    n = PAIR.n
    A = np.zeros((n, n))
    for i in range(n):
        A[i, max(i - 1, 0)] = 1.0
    # queries 1..5, 7, 8 attend to 0 (cls), 1 (previous), 2 (word piece), 3, 4 (previous), 6 (sep), 7 (previous)
    expected = np.zeros(len(CATEGORIES))
    expected[K["cls"]] = 1 / 7
    expected[K["word_pieces"]] = 1 / 7
    expected[K["sep"]] = 1 / 7
    expected[K["previous"]] = 4 / 7
    np.testing.assert_allclose(budget_reference(A, PAIR), expected)
    got = batch_budget(torch.tensor(A, dtype=torch.float32)[None, None], BudgetMaps.from_layouts([PAIR], n))
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-6)


def test_unknown_characters_are_copies_only_when_their_texts_are_equal():
    # two [UNK] of different characters, one repeated: identity comes from the text
    special = np.array([True, False, False, False, True])
    pair = PairLayout(tokens=("[CLS]", "[UNK]", "[UNK]", "[UNK]", "[SEP]"),
                      segment=np.array([-1, 0, 0, 0, -1], dtype=np.int8), word=np.array([-1, 0, 1, 2, -1]),
                      special=special, identity=("[CLS]", "你", "好", "你", "[SEP]"))
    m = category_map(pair)
    assert CATEGORY_NAMES[m[1, 3]] == "copies"
    assert CATEGORY_NAMES[m[1, 2]] == "next"
    assert CATEGORY_NAMES[m[3, 1]] == "copies"


def random_attention(rng, n, heads, width):
    A = np.zeros((heads, width, width), dtype=np.float32)
    raw = rng.random((heads, n, n)) ** 4
    A[:, :n, :n] = raw / raw.sum(-1, keepdims=True)
    return A


def test_batched_budget_matches_reference_with_padding_and_sums_to_one():
    rng = np.random.default_rng(0)
    short = layout(["[CLS]", "a", "a", "[SEP]", "a", "!", "[SEP]"], [-1, 0, 0, -1, 1, 1, -1],
                   [-1, 0, 1, -1, 0, 1, -1])
    layouts = [PAIR, short]
    width = PAIR.n
    A = np.stack([random_attention(rng, lo.n, 3, width) for lo in layouts])
    got = batch_budget(torch.from_numpy(A), BudgetMaps.from_layouts(layouts, width)).numpy()
    assert got.shape == (2, 3, len(CATEGORIES))
    for b, lo in enumerate(layouts):
        for h in range(3):
            ref = budget_reference(A[b, h, :lo.n, :lo.n], lo)
            np.testing.assert_allclose(got[b, h], ref, atol=1e-6)
            assert ref.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_budget_sums_merge_exactly_and_count_leaders():
    rng = np.random.default_rng(1)
    shares = rng.dirichlet(np.ones(len(CATEGORIES)), size=(6, 2, 3))  # [pairs, layers, heads, 11]
    whole = BudgetSums.zeros(2, 3)
    whole.add(shares)
    a, b = BudgetSums.zeros(2, 3), BudgetSums.zeros(2, 3)
    a.add(shares[:4])
    b.add(shares[4:])
    merged = a + b
    np.testing.assert_allclose(merged.total, whole.total)
    np.testing.assert_array_equal(merged.lead, whole.lead)
    assert merged.pairs == 6
    np.testing.assert_allclose(whole.mean(), shares.mean(0))
    np.testing.assert_allclose(whole.mean().sum(-1), 1.0)
    np.testing.assert_allclose(whole.lead_share().sum(-1), 1.0)
    leader = shares.argmax(-1)
    for layer in range(2):
        for head in range(3):
            for c in range(len(CATEGORIES)):
                assert whole.lead[layer, head, c] == int((leader[:, layer, head] == c).sum())


def random_layout(rng, n) -> PairLayout:
    """A pair of ``n`` tokens, framed [CLS] a [SEP] b [SEP], with repeated
    tokens, multi-piece words and punctuation drawn at random."""
    cut = int(rng.integers(2, n - 2))
    segment = np.array([-1] + [0] * (cut - 1) + [-1] + [1] * (n - cut - 2) + [-1], dtype=np.int8)
    tokens, word = [], []
    w = -1
    for j, s in enumerate(segment):
        if s < 0:
            tokens.append("[CLS]" if j == 0 else "[SEP]")
            word.append(-1)
            w = -1
            continue
        if w < 0 or rng.random() < 0.6:
            w += 1
        tokens.append(str(rng.choice(["the", "red", "straw", ",", "!", "[UNK]", "a"])))
        word.append(w)
    return layout(tokens, segment, word)


def test_masks_built_on_the_batch_equal_each_pairs_own():
    """The [B, T, T] masks and category map of a padded batch equal, pair by
    pair, PairLayout.masks() and category_map() (the same rules on a batch of
    one, unpadded; their values are checked against the definitions in
    test_patterns.py, above and by budget_reference), and are empty on padding."""
    from generator.patterns import BatchMasks, PaddedLayouts

    rng = np.random.default_rng(3)
    layouts = [random_layout(rng, int(rng.integers(6, 30))) for _ in range(40)]
    width = max(lo.n for lo in layouts) + 2
    padded = PaddedLayouts.from_layouts(layouts, width)
    masks = BatchMasks.from_layouts(padded)
    weights = BudgetMaps.from_layouts(padded).weights.view(len(layouts), width, width, len(CATEGORIES))
    for b, lo in enumerate(layouts):
        n = lo.n
        for name, want in lo.masks().items():
            got = getattr(masks, name)[b].numpy()
            if got.ndim == 1:
                np.testing.assert_array_equal(got[:n], want)
                assert not got[n:].any()
            else:
                np.testing.assert_array_equal(got[:n, :n], want)
                assert not got[n:].any() and not got[:, n:].any()
        cats = category_map(lo)
        hot = weights[b, :n, :n].numpy()
        q = ~lo.special
        np.testing.assert_array_equal(hot[q].argmax(-1), cats[q])
        np.testing.assert_allclose(hot[q].sum(-1), 1.0 / q.sum(), rtol=1e-6)
        assert not hot[~q].any() and not weights[b, n:].any() and not weights[b, :, n:].any()
