"""The one-sentence description of a head."""

from __future__ import annotations

from generator.budget import CATEGORY_NAMES
from generator.describe import CATEGORY_PHRASE, PATTERN_TARGET, describe_head
from generator.registry import PATTERNS

THRESHOLDS = {p: 0.5 for p in PATTERNS}


def budget(**shares):
    out = dict.fromkeys(CATEGORY_NAMES, 0.0)
    out.update(shares)
    out["other_sentence"] += 1.0 - sum(out.values())
    return out


def test_every_category_and_pattern_has_words():
    assert set(CATEGORY_PHRASE) == set(CATEGORY_NAMES)
    assert set(PATTERN_TARGET) | {"broad"} == set(PATTERNS)


def test_pattern_head_names_its_score_and_consistency():
    text = describe_head("previous", 1.0, {"previous": 0.982}, budget(previous=0.98), None, THRESHOLDS)
    assert text == "Previous token head: 98% of its attention goes to the token before (100% of pairs)."


def test_mixed_head_names_its_two_largest_categories():
    lead = dict.fromkeys(CATEGORY_NAMES, 0.0) | {"cls": 0.75}
    text = describe_head("mixed", 0.9, {"delimiter": 0.5}, budget(cls=0.48, own_sentence=0.31, self=0.05), lead,
                         THRESHOLDS)
    assert text == ("Mixed: parks 48% of its attention on [CLS] (the largest share on 75% of pairs); "
                    "next comes the rest of its own sentence (31%).")
    assert "nearest" not in text


def test_mixed_head_without_budget_still_gets_a_sentence():
    text = describe_head("mixed", None, {"broad": 0.4, "next": None}, None, None, THRESHOLDS)
    assert text.startswith("Mixed: no pattern reaches its threshold; closest is broad")
