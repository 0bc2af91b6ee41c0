"""One plain sentence per head: what it does, from its label, consistency,
scores and attention budget (:mod:`generator.budget`)."""

from __future__ import annotations

import math

from generator.registry import LABEL_INFO, MIXED

#: How the sentence names where the attention of a pattern head goes.
PATTERN_TARGET: dict[str, str] = {
    "next": "goes to the token after",
    "previous": "goes to the token before",
    "same_token": "goes to copies of its own token (itself included)",
    "other_sentence": "goes to the same token in the other sentence, where there is one",
    "same_word": "goes to the other pieces of its word, where it has some",
    "delimiter": "goes to [CLS] and [SEP]",
}

#: How the sentence names each budget category (:data:`generator.budget.CATEGORIES`).
CATEGORY_PHRASE: dict[str, str] = {
    "self": "on itself",
    "cls": "on [CLS]",
    "sep": "on [SEP]",
    "word_pieces": "on the other pieces of its word",
    "previous": "on the token before",
    "next": "on the token after",
    "copies": "on copies of its token in its sentence",
    "copies_other_sentence": "on the same token in the other sentence",
    "punctuation": "on punctuation",
    "own_sentence": "over the rest of its own sentence",
    "other_sentence": "over the other sentence",
}


def percent(share: float) -> str:
    """A share in [0, 1] as a whole percentage (``"<1%"`` below 0.5%)."""
    value = 100.0 * share
    return "<1%" if 0 < value < 0.5 else f"{value:.0f}%"


def _budget_clause(budget: dict[str, float], lead_share: dict[str, float] | None) -> str:
    order = sorted(budget, key=lambda c: -budget[c])
    first, second = order[0], order[1]
    verb = {"own_sentence": "spreads", "other_sentence": "spreads", "self": "keeps"}.get(first, "parks")
    clause = f"{verb} {percent(budget[first])} of its attention {CATEGORY_PHRASE[first]}"
    if lead_share is not None and lead_share.get(first) is not None:
        clause += f" (the largest share on {percent(lead_share[first])} of pairs)"
    return clause + f"; next comes {CATEGORY_PHRASE[second].split(' ', 1)[1]} ({percent(budget[second])})"


def describe_head(label: str, consistency: float | None, scores: dict[str, float | None],
                  budget: dict[str, float] | None, lead_share: dict[str, float] | None,
                  thresholds: dict[str, float]) -> str:
    """One plain sentence saying what a head does.

    Args:
        label: the head's label (a pattern name or ``mixed``).
        consistency: share of pairs agreeing with the label, or ``None``.
        scores: the head's corpus scores, pattern name -> score (``None`` = undefined).
        budget: the head's mean budget shares, category name -> share (the
            eleven :data:`generator.budget.CATEGORY_NAMES`), or ``None`` when
            not computed.
        lead_share: category name -> share of pairs on which that category
            has the largest share, or ``None``.
        thresholds: pattern name -> threshold.

    Returns:
        E.g. "Previous-token head: 98% of its attention goes to the token
        before (100% of pairs)." or "Mixed: parks 48% of its attention on
        [CLS] (the largest share on 90% of pairs); next comes the rest of its
        own sentence (31%)." A ``mixed`` head without a budget is described by
        its nearest pattern's score against its threshold.
    """
    agree = "" if consistency is None else f" ({percent(consistency)} of pairs)"
    if label != MIXED:
        title = LABEL_INFO[label].title
        score = scores.get(label)
        if label == "broad":
            return (f"{title} head: its attention is spread almost evenly, at {percent(score or 0.0)} of the "
                    f"maximum entropy{agree}.")
        return f"{title} head: {percent(score or 0.0)} of its attention {PATTERN_TARGET[label]}{agree}."
    if budget:
        return f"Mixed: {_budget_clause(budget, lead_share)}."
    ratios = {p: s / t for p, s in scores.items() if s is not None and not math.isnan(s) and (t := thresholds[p]) > 0}
    if not ratios:
        return "Mixed: no pattern score is defined for this head."
    nearest = max(ratios, key=ratios.get)
    return (f"Mixed: no pattern reaches its threshold; closest is {LABEL_INFO[nearest].title.lower()} at "
            f"{scores[nearest]:.2f} against {thresholds[nearest]:.2f}.")
