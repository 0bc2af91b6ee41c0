"""The one definition of each attention pattern and of the ``mixed`` label.

Everything else derives from :data:`REGISTRY`: the pattern names and their
order in every array (:data:`PATTERNS`), the label names (:data:`LABELS`), the
default thresholds of ``site_config.yml``, the colours of figures and of the
CSS label pills, the titles, the prose of pattern pages, the grid's short
names and the Methodology page's table. Adding a pattern is one entry here
plus its score formula in :mod:`generator.patterns`.

The six patterns are Jesse Vig's (2019, "Deconstructing BERT: Distilling 6
Patterns from 100 Million Parameters"; Vig 2019, "A Multiscale Visualization
of Attention in the Transformer Model", ACL demo); ``broad`` and the
delimiter reading follow Clark et al. (2019, "What Does BERT Look At? An
Analysis of BERT's Attention", BlackboxNLP, sections 3-4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    """One head label: a pattern, or ``mixed``.

    Attributes:
        name: the identifier used in arrays, files, CSS classes and ``heads.json``.
        title: the page title.
        short: the few letters shown in a cell of the layers x heads grid.
        color: the label's colour (figures and pills; Okabe-Ito, colour-blind safe).
        light_text: whether the pill's text is white (dark background).
        text: the pattern page's prose (Markdown, no corpus text).
        threshold: default threshold in [0, 1]; ``None`` for ``mixed``.
        threshold_reason: why that value (the Methodology page).
        formula: the score of one head on one pair, for the Methodology page.
        source: where the pattern comes from.
    """

    name: str
    title: str
    short: str
    color: str
    light_text: bool
    text: str
    threshold: float | None = None
    threshold_reason: str = ""
    formula: str = ""
    source: str = ""


REGISTRY: tuple[Label, ...] = (
    Label(
        name="next", title="Next token", short="next", color="#0072B2", light_text=True, threshold=0.5,
        threshold_reason="Clark et al. (2019): more than half of the attention on one neighbour",
        formula="mean over i in Q of A[i, i+1]", source="Vig (2019), pattern 1",
        text=(
            "Each token sends most of its attention to the token right after it. Vig found it in BERT's "
            "layer 2, head 0: \"i\" looks almost only at \"went\". It works inside a sentence; at the end of "
            "a sentence the next token is [SEP]. A head like this lets a position read its right "
            "neighbour, much as a backward RNN does."
        ),
    ),
    Label(
        name="previous", title="Previous token", short="prev", color="#E69F00", light_text=False, threshold=0.5,
        threshold_reason="Clark et al. (2019): more than half of the attention on one neighbour",
        formula="mean over i in Q of A[i, i−1]", source="Vig (2019), pattern 2",
        text=(
            "Each token attends mostly to the token just before it, like the state update of a forward "
            "RNN. In all-MiniLM-L6-v2, layer 0, head 2 puts about 0.98 of every token's attention on its "
            "left neighbour."
        ),
    ),
    Label(
        name="same_token", title="Same token", short="same", color="#009E73", light_text=True, threshold=0.3,
        threshold_reason="calibrated: chance is about 1/n per repeated token (< 0.1 here); 0.3 is three times the "
                         "typical head",
        formula="mean over i in Q of the sum of A[i, j] over j in Q with tok(j) = tok(i), j = i included",
        source="Vig (2019), pattern 3",
        text=(
            "A token attends to other occurrences of the same token (and to itself): \"store\" looks at "
            "\"store\". Vig describes this pattern as attention to identical *or related* words; relatedness "
            "has no exact definition, so the atlas measures only the identical-token part: the score adds up "
            "the attention that goes to identical tokens, the query's own position included."
        ),
    ),
    Label(
        name="other_sentence", title="Same token, other sentence", short="other", color="#CC79A7",
        light_text=False, threshold=0.25,
        threshold_reason="calibrated: typical heads give 0.01-0.1; 0.25 keeps only heads that clearly look across",
        formula="mean, over the i in Q having a j in Q with the same token in the other sentence, of the sum of "
                "A[i, j] over those j",
        source="Vig (2019), pattern 4",
        text=(
            "A token attends to the same token in the *other* sentence: \"store\" in sentence B looks at "
            "\"store\" in sentence A. Such heads may help the next-sentence objective, or a similarity "
            "model, match words across the pair. The score is only defined on pairs that share a token."
        ),
    ),
    Label(
        name="same_word", title="Other pieces of the same word", short="word", color="#D55E00", light_text=True,
        threshold=0.7,
        threshold_reason="calibrated: positional heads already score 0.4-0.65 (pieces are neighbours); 0.7 asks "
                         "for more",
        formula="mean, over the i in Q whose word has other WordPiece pieces, of the sum of A[i, j] over those "
                "pieces",
        source="Vig (2019), pattern 5",
        text=(
            "A word that WordPiece cut into pieces (straw ##berries) attends to its other pieces, which "
            "predict it best. Because pieces sit next to each other, next- and previous-token heads "
            "also score about half on this pattern; its threshold is set above that."
        ),
    ),
    Label(
        name="delimiter", title="Delimiters ([CLS], [SEP])", short="delim", color="#56B4E9", light_text=False,
        threshold=0.6,
        threshold_reason="Clark et al. (2019): heads putting most attention on [CLS]/[SEP]",
        formula="mean over i in Q of the sum of A[i, j] over j in S",
        source="Vig (2019), pattern 6; Clark et al. (2019), §3",
        text=(
            "Most attention goes to [CLS] and [SEP]. Clark et al. (2019) argue that attention to [SEP] "
            "is often a \"no-op\": a head that has nothing to do in a sentence parks its attention on "
            "the delimiters."
        ),
    ),
    Label(
        name="broad", title="Broad (bag of words)", short="broad", color="#F0E442", light_text=False, threshold=0.8,
        threshold_reason="calibrated: 0.8 of the maximum entropy is close to uniform over the pair",
        formula="mean over i in Q of the entropy of A[i, :] divided by ln n (natural log, 0 ln 0 = 0)",
        source="Clark et al. (2019), §3",
        text=(
            "Attention is spread evenly over the whole input (high entropy), as in a bag-of-words "
            "average of the sentence. The score is the row entropy divided by its maximum, ln n."
        ),
    ),
)

#: The label of a head that reaches no threshold.
MIXED_LABEL = Label(
    name="mixed", title="Mixed (no clear pattern)", short="·", color="#BBBBBB", light_text=False,
    threshold_reason="no pattern reaches its threshold",
    text=(
        "Heads whose scores reach no threshold: they do something other than the six patterns "
        "(syntax, coreference, a blend), or follow a pattern only on some pairs. Their pages still "
        "show the pattern they come closest to."
    ),
)

#: The seven pattern names, in the order used in every array and table.
PATTERNS: tuple[str, ...] = tuple(p.name for p in REGISTRY)
MIXED: str = MIXED_LABEL.name
#: Every label a head can get: the patterns, then ``mixed``.
LABELS: tuple[str, ...] = (*PATTERNS, MIXED)
#: Label name -> its :class:`Label`.
LABEL_INFO: dict[str, Label] = {label.name: label for label in (*REGISTRY, MIXED_LABEL)}
