"""The atlas's own prose about each pattern (Markdown, no corpus text)."""

PATTERN_TEXT = {
    "next": (
        "Each token sends most of its attention to the token right after it. Vig found it in BERT's "
        "layer 2, head 0: \"i\" looks almost only at \"went\". It works inside a sentence; at the end of "
        "a sentence the next token is [SEP]. A head like this lets a position read its right "
        "neighbour, much as a backward RNN does."
    ),
    "previous": (
        "Each token attends mostly to the token just before it, like the state update of a forward "
        "RNN. In all-MiniLM-L6-v2, layer 0, head 2 puts about 0.98 of every token's attention on its "
        "left neighbour."
    ),
    "same_token": (
        "A token attends to other occurrences of the same token (and to itself): \"store\" looks at "
        "\"store\". The score adds up the attention that goes to identical WordPiece tokens, the "
        "query's own position included."
    ),
    "other_sentence": (
        "A token attends to the same token in the *other* sentence: \"store\" in sentence B looks at "
        "\"store\" in sentence A. Such heads may help the next-sentence objective, or a similarity "
        "model, match words across the pair. The score is only defined on pairs that share a token."
    ),
    "same_word": (
        "A word that WordPiece cut into pieces (straw ##berries) attends to its other pieces, which "
        "predict it best. Because pieces sit next to each other, next- and previous-token heads "
        "also score about half on this pattern; its threshold is set above that."
    ),
    "delimiter": (
        "Most attention goes to [CLS] and [SEP]. Clark et al. (2019) argue that attention to [SEP] "
        "is often a \"no-op\": a head that has nothing to do in a sentence parks its attention on "
        "the delimiters."
    ),
    "broad": (
        "Attention is spread evenly over the whole input (high entropy), as in a bag-of-words "
        "average of the sentence. The score is the row entropy divided by its maximum, ln n."
    ),
    "mixed": (
        "Heads whose scores reach no threshold: they do something other than the six patterns "
        "(syntax, coreference, a blend), or follow a pattern only on some pairs. Their pages still "
        "show the pattern they come closest to."
    ),
}

THRESHOLD_REASON = {
    "next": "Clark et al. (2019): more than half of the attention on one neighbour",
    "previous": "Clark et al. (2019): more than half of the attention on one neighbour",
    "same_token": "calibrated: chance is about 1/n per repeated token (< 0.1 here); 0.3 is three times the typical head",
    "other_sentence": "calibrated: typical heads give 0.01-0.1; 0.25 keeps only heads that clearly look across",
    "same_word": "calibrated: positional heads already score 0.4-0.65 (pieces are neighbours); 0.7 asks for more",
    "delimiter": "Clark et al. (2019): heads putting most attention on [CLS]/[SEP]",
    "broad": "calibrated: 0.8 of the maximum entropy is close to uniform over the pair",
}
