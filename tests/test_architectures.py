"""Every supported architecture, end to end, on a tiny randomly initialised
model with a real tokenizer of its own type, trained here on the shipped
corpus with the ``tokenizers`` library and wrapped in the model's own
tokenizer class (no download):

* WordPiece (BERT, DistilBERT, ELECTRA; MPNet with ``<s> a </s></s> b </s>``),
* byte-level BPE (RoBERTa, ``<s> a </s></s> b </s>``; ModernBERT, ``[CLS] a [SEP] b [SEP]``),
* SentencePiece Unigram (ALBERT, XLM-RoBERTa and CamemBERT with
  ``<s> a </s></s> b </s>``, DeBERTa-v2/v3).

ModernBERT's tokenizer has no class of its own (its checkpoints ship a
tokenizer.json): it is wrapped in ``PreTrainedTokenizerFast``.

For each: tokens and words read from the text, attention captured exactly
(against ``output_attentions=True`` of an eager model), the query/key view
reproducing attention with every term the architecture adds, head masking and
gates at the attention output projection, value norms, and a full site with
analyses whose ``heads.json`` scores and budgets equal an independent
computation. Also: compute.dtype and the refusals of unsupported models.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_independent_check import literal_scores  # the one literal reference of the seven scores
from conftest import ROOT, small_corpus_items, write_project
from generator.budget import CATEGORY_NAMES
from generator.config import DEFAULT_MODEL, PATTERNS, Pair
from generator.errors import AtlasError

#: Pairs every architecture is built on: Chinese, punctuation inside words,
#: a typed "[SEP]" (text, not a separator) and words split into pieces.
EXTRA_PAIRS = [
    {"id": "zh-cities", "a": "他在北京工作，她在上海。", "b": "他们都很喜欢北京。"},
    {"id": "typed-sep", "a": "Press the [SEP] key twice.", "b": "The [SEP] key is text here, not a separator."},
    {"id": "numbers", "a": "It cost 1,250.75 dollars.", "b": "Prices rose to 3,400.10 dollars, roughly 1,250.75 more."},
    {"id": "pieces", "a": "Antidisestablishmentarianism resurfaced unexpectedly.",
     "b": "Counterrevolutionaries reorganised antidisestablishmentarianism."},
    {"id": "store-twice", "a": "store, then the store.", "b": "Store the strawberries at the store."},
]
TOL = 2e-3


def corpus_items() -> list[dict]:
    return small_corpus_items(n_regular=3) + EXTRA_PAIRS


def training_text() -> list[str]:
    items = yaml.safe_load((ROOT / "content" / "corpus.yml").read_text(encoding="utf-8"))
    return [p[s] for p in items for s in ("a", "b")]


# ------------------------------------------------------------------ tokenizers

def train_wordpiece(specials: list[str], unk: str) -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(training_text(), trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials))
    return tok.get_vocab()


def train_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(training_text(), trainers.BpeTrainer(
        vocab_size=800, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(specials: list[str], unk: str, lower: bool) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    if lower:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(training_text(), trainers.UnigramTrainer(
        vocab_size=800, special_tokens=specials, unk_token=unk))
    return [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]


# ------------------------------------------------------------------ tiny models

@dataclass(frozen=True)
class Spec:
    """One architecture under test: its tokenizer type, whether that
    tokenizer lower-cases, and how many special tokens frame a pair."""

    model_type: str
    tokenizer_type: str
    lower: bool
    framing: int


SPECS = {
    "bert": Spec("bert", "WordPiece", True, 3),
    "distilbert": Spec("distilbert", "WordPiece", True, 3),
    "electra": Spec("electra", "WordPiece", True, 3),
    "albert": Spec("albert", "SentencePiece Unigram", True, 3),
    "roberta": Spec("roberta", "byte-level BPE", False, 4),
    "xlm-roberta": Spec("xlm-roberta", "SentencePiece Unigram", False, 4),
    "camembert": Spec("camembert", "SentencePiece Unigram", False, 4),
    "deberta-v2": Spec("deberta-v2", "SentencePiece Unigram", False, 3),
    "mpnet": Spec("mpnet", "WordPiece", True, 4),
    "modernbert": Spec("modernbert", "byte-level BPE", False, 3),
}

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=130, initializer_range=0.3, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)


def make_tokenizer(kind: str):
    """The model's own tokenizer class built on a vocabulary trained here."""
    import transformers as tf

    bert_specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if kind in ("bert", "distilbert", "electra"):
        cls = {"bert": tf.BertTokenizer, "distilbert": tf.DistilBertTokenizer, "electra": tf.ElectraTokenizer}[kind]
        return cls(vocab=train_wordpiece(bert_specials, "[UNK]"))
    if kind == "mpnet":  # MPNet's embeddings take the padding index 1
        return tf.MPNetTokenizer(vocab=train_wordpiece(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"], "[UNK]"))
    if kind == "modernbert":  # its checkpoints ship a tokenizer.json: byte-level BPE framed by [CLS] / [SEP]
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

        vocab, merges = train_bpe(bert_specials)
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return tf.PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                                          pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]",
                                          model_input_names=["input_ids", "attention_mask"])
    if kind == "roberta":
        vocab, merges = train_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return tf.RobertaTokenizer(vocab=vocab, merges=merges)
    if kind == "camembert":
        return tf.CamembertTokenizer(vocab=train_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>", False))
    if kind == "xlm-roberta":
        return tf.XLMRobertaTokenizer(vocab=train_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>", False))
    if kind == "albert":
        return tf.AlbertTokenizer(vocab=train_unigram(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "<unk>", True))
    if kind == "deberta-v2":
        return tf.DebertaV2Tokenizer(vocab=train_unigram(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]",
                                                          False))
    raise ValueError(kind)


def make_config(kind: str, tokenizer):
    import transformers as tf

    common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if kind == "distilbert":
        return tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128,
                                   initializer_range=0.3, dropout=0.0, attention_dropout=0.0, **common)
    if kind == "albert":
        return tf.AlbertConfig(embedding_size=16, num_hidden_groups=1, inner_group_num=1, **SMALL, **common)
    if kind == "modernbert":  # layers 0 and 2 global, layer 1 local with a half window of 4 tokens
        return tf.ModernBertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=256, global_attn_every_n_layers=2, local_attention=8,
                                   initializer_range=0.3, cls_token_id=tokenizer.cls_token_id,
                                   sep_token_id=tokenizer.sep_token_id, **common)
    if kind == "electra":
        return tf.ElectraConfig(embedding_size=16, **SMALL, **common)
    if kind == "deberta-v2":  # v3 settings: relative attention with shared keys, both position terms
        return tf.DebertaV2Config(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=32,
                                  max_relative_positions=-1, position_biased_input=False, share_att_key=True,
                                  norm_rel_ebd="layer_norm", type_vocab_size=0, **SMALL, **common)
    cls = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig,
           "camembert": tf.CamembertConfig, "mpnet": tf.MPNetConfig}[kind]
    extra = {"relative_attention_num_buckets": 32} if kind == "mpnet" else {}
    if kind in ("roberta", "xlm-roberta", "camembert"):
        extra = {"type_vocab_size": 1}
    return cls(**SMALL, **extra, **common)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """kind -> folder of a saved tiny model and its tokenizer, made on first use."""
    from transformers import AutoModel

    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{kind}")
            tokenizer = make_tokenizer(kind)
            torch.manual_seed(0)
            model = AutoModel.from_config(make_config(kind, tokenizer))
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            made[kind] = folder
        return made[kind]

    return get


KINDS = list(SPECS)


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """kind -> (LoadedModel, encoded pairs), loaded once per module."""
    from generator.model import encode_pairs, load_model

    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            lm = load_model(str(tiny_models(kind)), "cpu")
            cache[kind] = (lm, encode_pairs(lm, [Pair(**p) for p in EXTRA_PAIRS], 128))
        return cache[kind]

    return get


def eager_reference(folder: Path):
    """The same checkpoint loaded with transformers' own eager attention."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder, attn_implementation="eager").eval()


def alone_inputs(e) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": torch.tensor([e.input_ids.tolist()])}
    if e.token_type_ids is not None:
        inputs["token_type_ids"] = torch.tensor([e.token_type_ids.tolist()])
    return inputs


@pytest.mark.parametrize("kind", KINDS)
def test_capture_equals_eager_attention_and_qk_reproduces_it(kind, loaded, tiny_models):
    """The captured attention of a padded batch equals ``output_attentions``
    of transformers' eager model on each pair alone; the query/key view,
    ``softmax(q k^T * scaling + extra terms + mask)``, reproduces it to 1e-5,
    and where the architecture adds terms, q.k alone does not."""
    from generator.model import capture_query_key

    lm, encoded = loaded(kind)
    assert lm.model.config.model_type == kind
    out = capture_query_key(lm, encoded)
    assert sorted(out["extra"]) == sorted(lm.arch.extra_terms)
    ref = eager_reference(tiny_models(kind))
    mask = torch.as_tensor(out["mask"]).bool()  # [B, T]
    q, k = torch.as_tensor(out["q"]).double(), torch.as_tensor(out["k"]).double()
    logits = torch.einsum("blhid,blhjd->blhij", q, k) * torch.as_tensor(out["scaling"])[None, :, None, None, None]
    content_only = logits.clone()
    for term in out["extra"].values():
        logits = logits + torch.as_tensor(term).double()
    key_mask = ~mask[:, None, None, None, :]
    recon = torch.softmax(logits.masked_fill(key_mask, -math.inf), -1).numpy()
    content = torch.softmax(content_only.masked_fill(key_mask, -math.inf), -1).numpy()
    gaps = []
    for b, e in enumerate(encoded):
        n = len(e.input_ids)
        with torch.inference_mode():
            want = torch.stack(ref(**alone_inputs(e), output_attentions=True).attentions, 1)[0].numpy()
        got = out["attention"][b, :, :, :n, :n]
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(recon[b, :, :, :n, :n], got, atol=1e-5)
        assert np.all(out["attention"][b, :, :, :n, n:] == 0)  # padding gets nothing
        gaps.append(np.abs(content[b, :, :, :n, :n] - got).max())
    if lm.arch.extra_terms:
        assert max(gaps) > 1e-3  # the named terms matter: q.k alone is not the attention
    else:
        assert max(gaps) < 1e-5

    # the pages' copy (Showcase): q, k, the scale and the named terms reproduce the attention
    from generator.qk import logit_term_sizes
    from generator.scoring import Showcase, compute_showcase

    show = compute_showcase(lm, encoded, [0, 3], [0, 3], 2, progress=False)
    show = Showcase.from_cache(*show.to_cache())
    for i in (0, 3):
        qi, ki = show.qk[i]
        terms = show.extra.get(i, {})
        assert sorted(terms) == sorted(lm.arch.extra_terms)
        for layer in range(lm.layers):
            for h in range(lm.heads):
                logits = qi[layer, h].astype(np.float64) @ ki[layer, h].T * show.scaling[layer]
                logits = logits + sum((t[layer, h] for t in terms.values()), np.zeros_like(logits))
                np.testing.assert_allclose(torch.softmax(torch.as_tensor(logits), -1).numpy(),
                                           show.attention[i][layer, h], atol=1e-5)
                sizes = logit_term_sizes(qi[layer, h], ki[layer, h], float(show.scaling[layer]),
                                         {n: t[layer, h] for n, t in terms.items()})
                assert list(sizes) == ["content", *terms]
                # a mask term (ModernBERT's local window) is 0 on the keys it keeps; a logit term moves them
                assert all(v > 0 for name, v in sizes.items() if name != "local_window")


# ------------------------------------------------------------------ tokens and words

#: a BasicTokenizer word, written independently of generator.tokens: one CJK
#: ideograph, one punctuation or symbol character (ASCII "_" included), or a
#: run of other non-space characters
WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\w\s]|_|(?:(?![\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff_])\w)+")


def text_words(text: str) -> np.ndarray:
    """``[len(text)]`` the word index of every character, -1 for spaces."""
    out = np.full(len(text), -1)
    for w, m in enumerate(WORD.finditer(text)):
        out[m.start():m.end()] = w
    return out


def independent_layout(tok, a: str, b: str, lower: bool) -> dict:
    """Special tokens, sentence, identity (the span's text) and word (the
    word of the span's first non-space character, or of the next one) of
    every token, from the tokenizer's offsets and the text alone."""
    enc = tok(a, b, return_offsets_mapping=True, return_special_tokens_mask=True, split_special_tokens=True)
    texts, words = (a, b), (text_words(a), text_words(b))
    special = [bool(s) for s in enc["special_tokens_mask"]]
    out = {"ids": enc["input_ids"], "types": enc.get("token_type_ids"), "special": special, "tok": [], "seg": [],
           "word": []}
    for j, (s, (start, end)) in enumerate(zip(enc.sequence_ids(), enc["offset_mapping"])):
        if special[j]:
            out["tok"].append(None), out["seg"].append(None), out["word"].append(None)
            continue
        piece = texts[s][start:end].strip()
        out["tok"].append(piece.casefold() if lower else piece)
        out["seg"].append(s)
        after = [w for w in words[s][start:] if w >= 0]
        out["word"].append(after[0] if after else -1)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_tokens_and_words_come_from_the_text(kind, loaded):
    """On every tokenizer type: the framing has the architecture's special
    tokens only; a typed [SEP] is text; each Chinese ideograph, each comma
    and point of 1,250.75 is a word of its own; the pieces of a split word
    share its word; "store," and "Store" at a sentence start are the token
    "store" (the span's text, case-folded when the tokenizer lower-cases)."""
    lm, encoded = loaded(kind)
    spec = SPECS[kind]
    by_id = {p["id"]: (p, e) for p, e in zip(EXTRA_PAIRS, encoded)}
    for p, e in by_id.values():
        ref = independent_layout(lm.tokenizer, p["a"], p["b"], spec.lower)
        lay = e.layout
        assert e.input_ids.tolist() == ref["ids"]
        assert lay.special.tolist() == ref["special"]
        assert int(lay.special.sum()) == spec.framing, (kind, p["id"], lay.tokens)
        for j in np.flatnonzero(~lay.special):
            assert lay.identity[j] == ref["tok"][j], (kind, p["id"], j, lay.tokens[j])
            assert lay.word[j] == ref["word"][j], (kind, p["id"], j, lay.tokens[j])
            assert lay.segment[j] == ref["seg"][j]
    # a typed [SEP] is text: only the framing is special
    p, e = by_id["typed-sep"]
    assert any("[" == lay_id or "[sep]" in lay_id.casefold() for lay_id in e.layout.identity[1:-1])
    # Chinese: one word per ideograph
    p, e = by_id["zh-cities"]
    enc = lm.tokenizer(p["a"], p["b"], return_offsets_mapping=True)
    starts = [start for (start, end), s in zip(enc["offset_mapping"], enc.sequence_ids()) if s == 0]
    a_words = [int(w) for w, s in zip(e.layout.word, e.layout.segment) if s == 0]
    assert a_words == starts  # no spaces in the sentence: word k is character k
    # 1,250.75: digits, comma and point are separate words
    p, e = by_id["numbers"]
    a = [(e.layout.identity[j], int(e.layout.word[j])) for j in np.flatnonzero(e.layout.segment == 0)]
    assert ("," , 3) in a and (".", 5) in a  # "It cost 1 , 250 . 75 dollars ." -> words 0..8
    # a word split into pieces: several tokens share one word
    p, e = by_id["pieces"]
    words = [(int(s), int(w)) for w, s in zip(e.layout.word, e.layout.segment) if s >= 0]
    assert max(words.count(w) for w in words) >= 3
    # "store" opening a sentence and "store" after a space (RoBERTa's "Ġstore"): the same text;
    # "Store" opening b: the same once case-folded, when the tokenizer lower-cases
    p, e = by_id["store-twice"]

    def word_text(seg: int, word: int) -> str:
        return "".join(e.layout.identity[j] for j in range(e.layout.n)
                       if e.layout.segment[j] == seg and e.layout.word[j] == word)

    assert word_text(0, 0) == word_text(0, 4) == "store"
    assert (word_text(1, 0) == "store") == spec.lower


def test_a_typed_special_token_the_vocabulary_still_maps_is_named(loaded, caplog):
    """DeBERTa-v2/v3's SentencePiece vocabulary holds "[SEP]" as a piece: the
    typed text still becomes the separator id. The pair is named in a
    warning; BERT's WordPiece splits the text and nothing is said."""
    from generator.model import encode_pairs

    pair = [Pair(**EXTRA_PAIRS[1])]
    for kind, expected in (("deberta-v2", True), ("bert", False)):
        lm, _ = loaded(kind)
        caplog.clear()
        with caplog.at_level("WARNING", logger="generator.model"):
            (e,) = encode_pairs(lm, pair, 128, corpus_name="corpus.yml")
        sep_inside = bool(np.any(e.input_ids[~e.layout.special] == lm.tokenizer.sep_token_id))
        assert sep_inside == expected
        named = [r.getMessage() for r in caplog.records if "typed-sep" in r.getMessage()]
        assert bool(named) == expected
        if expected:
            assert "'[SEP]'" in named[0] and "corpus.yml" in named[0]


# ------------------------------------------------------------------ masking, gates, value norms

@pytest.mark.parametrize("kind", KINDS)
def test_masking_gates_and_value_norms_act_at_the_output_projection(kind, loaded):
    """The input of the table's output projection is the concatenation of the
    heads' ``attention @ values`` (so masking, gates and value norms act on
    the right tensor); masking a head equals a zero gate and zeroing its
    columns of W_O; a gate of ones changes nothing; in ALBERT a layer's mask
    acts on that layer's call of the shared projection only."""
    import copy

    from generator.analysis.importance import gate_heads, mask_heads
    from generator.model import base_model, collate, forward_capture
    from generator.value_norms import head_contributions

    lm, encoded = loaded(kind)
    batch = encoded[:3]
    inputs = collate(lm, batch)
    layer_out = [lm.attention_output(layer) for layer in range(lm.layers)]
    seen_in, seen_out, caps = [], [], {}

    def keep(cap):
        caps[cap.layer] = (cap.weights.clone(), cap.value.clone())

    hooks = []
    for module in {id(m): m for m in layer_out}.values():
        hooks.append(module.register_forward_pre_hook(lambda m, args: seen_in.append(args[0].detach().clone())))
        hooks.append(module.register_forward_hook(lambda m, args, out: seen_out.append(out.detach().clone())))
    try:
        forward_capture(lm, batch, keep)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen_in) == lm.layers
    B, T = inputs["input_ids"].shape
    for layer in range(lm.layers):
        weights, value = caps[layer]
        context = (weights @ value).transpose(1, 2).reshape(B, T, -1)
        torch.testing.assert_close(seen_in[layer], context, atol=1e-5, rtol=1e-5)
        # Kobayashi et al. 2020: the heads' vectors add up to the projection's output (bias aside)
        values = value.transpose(1, 2).reshape(B, T, -1)
        bias = layer_out[layer].bias if layer_out[layer].bias is not None else 0.0  # ModernBERT: no bias
        total = head_contributions(values, weights, layer_out[layer].weight).sum(1) + bias
        torch.testing.assert_close(total, seen_out[layer].float(), atol=1e-4, rtol=1e-4)

    def last(**ctx):
        with torch.inference_mode():
            return base_model(lm.model)(**inputs).last_hidden_state

    plain = last()
    ones = torch.ones(lm.layers, lm.heads)
    with gate_heads(lm, ones):
        assert torch.equal(last(), plain)
    head = (lm.layers - 1, 1)
    zero = ones.clone()
    zero[head] = 0
    with mask_heads(lm, [head]):
        masked = last()
    with gate_heads(lm, zero):
        assert torch.equal(last(), masked)
    assert not torch.allclose(masked, plain, atol=1e-4)
    d = lm.head_dim
    cols = slice(head[1] * d, (head[1] + 1) * d)
    if not lm.arch.shared_layers:
        twin = copy.deepcopy(lm.model)
        with torch.no_grad():
            lm.arch.output(lm.arch.layer_blocks(base_model(twin))[head[0]]).weight[:, cols] = 0
            want = base_model(twin)(**inputs).last_hidden_state
        torch.testing.assert_close(masked, want, atol=1e-5, rtol=1e-5)
    else:
        # the shared projection with the columns zeroed masks the head in every layer ...
        twin = copy.deepcopy(lm.model)
        with torch.no_grad():
            lm.arch.output(lm.arch.layer_blocks(base_model(twin))[0]).weight[:, cols] = 0
            want = base_model(twin)(**inputs).last_hidden_state
        with mask_heads(lm, [(layer, head[1]) for layer in range(lm.layers)]):
            torch.testing.assert_close(last(), want, atol=1e-5, rtol=1e-5)
        # ... and masking it in the last layer alone leaves the first layer's call unchanged
        seen_in.clear()
        hook = layer_out[0].register_forward_pre_hook(lambda m, args: seen_in.append(args[0].detach().clone()))
        try:
            with mask_heads(lm, [head]):
                last()
        finally:
            hook.remove()
        assert torch.equal(seen_in[0], caps_context(caps, 0, B, T))
        assert not torch.allclose(masked, want, atol=1e-4)


def caps_context(caps: dict, layer: int, B: int, T: int) -> torch.Tensor:
    weights, value = caps[layer]
    return (weights @ value).transpose(1, 2).reshape(B, T, -1)


# ------------------------------------------------------------------ full site

def literal_budget(A: np.ndarray, L: dict) -> dict[str, float]:
    """The attention budget of one head on one pair: each (query, key) cell
    to the first category that matches, in the methodology's order."""
    n = len(L["ids"])
    tok, seg, word, special = L["tok"], L["seg"], L["word"], L["special"]
    Q = [i for i in range(n) if not special[i]]
    total = dict.fromkeys(CATEGORY_NAMES, 0.0)
    for i in Q:
        for j in range(n):
            if j == i:
                c = "self"
            elif special[j]:
                c = "cls" if j == 0 else "sep"
            elif seg[j] == seg[i] and word[j] == word[i]:
                c = "word_pieces"
            elif j == i - 1:
                c = "previous"
            elif j == i + 1:
                c = "next"
            elif tok[j] == tok[i]:
                c = "copies" if seg[j] == seg[i] else "copies_other_sentence"
            elif tok[j] and all(not ch.isalnum() and not ch.isspace() for ch in tok[j]):
                c = "punctuation"
            elif seg[j] == seg[i]:
                c = "own_sentence"
            else:
                c = "other_sentence"
            total[c] += float(A[i, j])
    return {c: v / len(Q) for c, v in total.items()}


def independent_means(folder: Path, items: list[dict], lower: bool) -> dict[tuple[int, int], dict]:
    """Corpus means of every head's scores, raw budget and value-weighted
    budget from ``output_attentions=True`` of transformers' eager model on
    each pair alone, value norms from each layer's input (a hook on the
    table's attention module) and the weights."""
    from transformers import AutoModel, AutoTokenizer

    from generator.architectures import BY_MODEL_TYPE
    from generator.model import base_model

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    arch = BY_MODEL_TYPE[model.config.model_type]
    blocks = arch.layer_blocks(base_model(model))
    H = model.config.num_attention_heads
    scores, budgets, value_budgets = {}, {}, {}
    for item in items:
        L = independent_layout(tok, item["a"], item["b"], lower)
        inputs = {"input_ids": torch.tensor([L["ids"]])}
        if L["types"] is not None and "token_type_ids" in tok.model_input_names:
            inputs["token_type_ids"] = torch.tensor([L["types"]])
        layer_inputs = []
        attention = {id(arch.attention(b)): arch.attention(b) for b in blocks}
        hooks = [m.register_forward_pre_hook(lambda m, args, kwargs: layer_inputs.append(
            (kwargs.get("hidden_states", args[0] if args else None)).detach()), with_kwargs=True)
            for m in attention.values()]
        try:
            with torch.inference_mode():
                out = model(**inputs, output_attentions=True)
        finally:
            for h in hooks:
                h.remove()
        for layer, block in enumerate(blocks):
            x = layer_inputs[layer][0].double()
            v_proj = getattr(arch.attention(block), arch.projections[2])
            w_v = v_proj.weight.detach().double()
            b_v = v_proj.bias.detach().double() if v_proj.bias is not None else torch.zeros(w_v.shape[0]).double()
            if len(set(arch.projections)) == 1:  # one fused q/k/v projection (ModernBERT's Wqkv): the third part
                width = w_v.shape[0] // 3
                w_v, b_v = w_v[2 * width:], b_v[2 * width:]
            v = x @ w_v.T + b_v
            Wo = arch.output(block).weight.detach().double()
            d = Wo.shape[1] // H
            for h in range(H):
                A = out.attentions[layer][0, h].double().numpy()
                norms = torch.linalg.vector_norm(v[:, h * d:(h + 1) * d] @ Wo[:, h * d:(h + 1) * d].T, dim=-1).numpy()
                W = A * norms[None, :]
                W = W / W.sum(-1, keepdims=True)
                scores.setdefault((layer, h), []).append(literal_scores(A, L))
                budgets.setdefault((layer, h), []).append(literal_budget(A, L))
                value_budgets.setdefault((layer, h), []).append(literal_budget(W, L))
    means = {}
    for key in scores:
        means[key] = {
            "scores": {p: (None if all(math.isnan(s[p]) for s in scores[key])
                           else float(np.nanmean([s[p] for s in scores[key]]))) for p in PATTERNS},
            "budget": {c: float(np.mean([b[c] for b in budgets[key]])) for c in CATEGORY_NAMES},
            "value_budget": {c: float(np.mean([b[c] for b in value_budgets[key]])) for c in CATEGORY_NAMES},
        }
    return means


@pytest.mark.parametrize("kind", KINDS)
def test_a_tiny_model_builds_a_full_site_equal_to_an_independent_computation(kind, tiny_models, tmp_path):
    """A full build with every analysis; ``heads.json`` scores, budgets and
    value-weighted budgets equal the independent computation within 2e-3."""
    from generator.cli import run_build

    folder = tiny_models(kind)
    items = corpus_items()
    attribution = True  # through get_input_embeddings(), whatever the architecture names its embeddings
    config = write_project(tmp_path, items, model={"name_or_path": str(folder), "max_length": 128},
                           pair_pages="examples",
                           analysis={"importance": True, "group_masking": True, "attribution": attribution,
                                     "attribution_steps": 4, "perturbed_masking": False, "head_map": True,
                                     "max_pairs": 1, "objective_pairs": 4, "bootstrap_resamples": 20,
                                     "head_map_pairs": 4})
    run_build(config, progress=False)
    doc = json.loads((tmp_path / "site" / "data" / "heads.json").read_text(encoding="utf-8"))
    assert len(doc["heads"]) == doc["model"]["layers"] * 4 and doc["model"]["layers"] >= 2
    ref = independent_means(folder, items, SPECS[kind].lower)
    worst = 0.0
    for h in doc["heads"]:
        want = ref[(h["layer"], h["head"])]
        for p in PATTERNS:
            if want["scores"][p] is None:
                assert h["scores"][p] is None, (kind, h["layer"], h["head"], p)
            else:
                worst = max(worst, abs(h["scores"][p] - want["scores"][p]))
        for field in ("budget", "value_budget"):
            assert sum(h[field].values()) == pytest.approx(1.0, abs=1e-5)
            for c in CATEGORY_NAMES:
                worst = max(worst, abs(h[field][c] - want[field][c]))
        assert "importance" in h  # head masking ran on this architecture
    assert worst < TOL, (kind, worst)
    print(f"{kind}: largest difference to the independent computation {worst:.2e}")
    # the head view and model view on the pair pages, the query/key view on every head page
    site = tmp_path / "site"
    pair_pages = [p.read_text(encoding="utf-8") for p in site.glob("pairs/*/index.html")]
    assert pair_pages and all("atlas-headview" in t and "atlas-modelview" in t for t in pair_pages)
    head_pages = [site / "heads" / f"layer-{h['layer']:02d}-head-{h['head']:02d}" / "index.html" for h in doc["heads"]]
    assert all("atlas-qkview" in p.read_text(encoding="utf-8") for p in head_pages)
    # the query/key view's own data reproduces the head's attention: softmax(q.k * scale + the named terms),
    # computed here from the page's JSON as views.js computes it
    for page in head_pages[:3]:
        spec = json.loads(re.search(r'<div class="atlas-qkview" id="([^"]+)" data-spec="([^"]+)"></div>\s*'
                                    r'<script type="application/json" id="\2">(.*?)</script>',
                                    page.read_text(encoding="utf-8"), re.S).group(3))
        n, d = spec["n"], spec["d"]
        q, k, att = (_floats(spec[x]).reshape(shape) for x, shape in (("q", (n, d)), ("k", (n, d)), ("att", (n, n))))
        logits = (q.astype(np.float64) @ k.astype(np.float64).T) * spec["scale"]
        if spec["extra"] is not None:
            logits = logits + _floats(spec["extra"]).reshape(n, n)
        logits -= logits.max(axis=1, keepdims=True)
        soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(soft, att, atol=2e-5)
        assert bool(spec["terms"]) == (kind in ("deberta-v2", "mpnet", "modernbert")), (kind, spec["terms"])


def _floats(blob) -> np.ndarray:
    """A float32 array the pages embed (generator.views.b64)."""
    import base64

    return np.frombuffer(base64.b64decode(blob["b64"] if isinstance(blob, dict) else blob), dtype="<f4")


# ------------------------------------------------------------------ precision

def test_a_float16_checkpoint_runs_in_float32_equal_to_its_rounded_weights_upcast(tmp_path):
    """compute.dtype defaults to float32 whatever the checkpoint's precision:
    a float16-saved copy of the default model is run in float32 on a CPU,
    and its scores and budgets equal those of the float32 model whose
    weights are rounded to float16 and upcast, within 1e-5."""
    from transformers import AutoModel, AutoTokenizer

    from generator.model import encode_pairs, load_model, resolve_model_path
    from generator.scoring import score_corpus

    source = resolve_model_path(DEFAULT_MODEL)
    half = AutoModel.from_pretrained(source, dtype=torch.float16)
    assert next(half.parameters()).dtype == torch.float16
    half.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"

    lm = load_model(str(tmp_path), "cpu")
    assert lm.dtype == "float32" and {p.dtype for p in lm.model.parameters()} == {torch.float32}
    ref = load_model(DEFAULT_MODEL, "cpu")
    with torch.no_grad():
        for p in ref.model.parameters():
            p.copy_(p.half().float())
    pairs = [Pair(**p) for p in EXTRA_PAIRS]
    got = score_corpus(lm, encode_pairs(lm, pairs, 128), 4, progress=False)
    want = score_corpus(ref, encode_pairs(ref, pairs, 128), 4, progress=False)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    for a, b in ((got[2].sums, want[2].sums), (got[2].value_sums, want[2].value_sums)):
        np.testing.assert_allclose(a.mean(), b.mean(), atol=1e-5)


def test_half_precision_is_refused_on_a_cpu_and_named():
    from generator.model import load_model

    for dtype in ("float16", "bfloat16"):
        with pytest.raises(AtlasError, match=f"compute.dtype: {dtype} needs a CUDA device"):
            load_model(DEFAULT_MODEL, "cpu", dtype=dtype)
    with pytest.raises(AtlasError, match="compute.dtype: 'float64' is not one of"):
        load_model(DEFAULT_MODEL, "cpu", dtype="float64")


def test_compute_dtype_is_a_validated_setting(tmp_path):
    from generator.config import load_config

    cfg = load_config(write_project(tmp_path / "a", corpus_items()))
    assert cfg.raw.compute.dtype == "float32"
    with pytest.raises(AtlasError, match="dtype"):
        load_config(write_project(tmp_path / "b", corpus_items(), compute={"device": "cpu", "dtype": "float64"}))


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("config_name, why", [
    ("GPT2Config", "decoder-only"), ("T5Config", "encoder-decoder"), ("BartConfig", "encoder-decoder"),
    ("DebertaConfig", "DeBERTa v1"), ("CLIPTextConfig", "no table entry"),
])
def test_unsupported_models_are_refused_with_the_reason(config_name, why, tmp_path):
    import transformers

    from generator.model import load_model

    getattr(transformers, config_name)().save_pretrained(tmp_path)
    with pytest.raises(AtlasError) as err:
        load_model(str(tmp_path), "cpu")
    message = str(err.value)
    assert why in message and "model.name_or_path" in message
    for name in ("BERT (bert)", "DistilBERT", "ALBERT", "RoBERTa", "XLM-RoBERTa", "ELECTRA", "DeBERTa-v2/v3", "MPNet",
                 "ModernBERT"):
        assert name in message


@pytest.mark.parametrize("variant", [
    {"share_att_key": False, "pos_att_type": ["c2p"], "position_buckets": -1, "conv_kernel_size": 3},
    {"share_att_key": False, "pos_att_type": ["p2c", "c2p"], "position_buckets": 16, "position_biased_input": True},
])
def test_deberta_v2_variants_are_captured_with_their_terms(variant, tiny_models, tmp_path):
    """DeBERTa-v2's other settings (separate position projections, one
    position term, no buckets, the convolution layer, absolute positions
    too): captured attention equals eager, and q.k with the named terms
    reproduces it to 1e-5."""
    from transformers import AutoModel, AutoTokenizer, DebertaV2Config

    from generator.model import capture_query_key, encode_pairs, load_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("deberta-v2"))
    settings = {"relative_attention": True, "max_relative_positions": -1, "position_biased_input": False,
                "type_vocab_size": 0, **SMALL, **variant}
    torch.manual_seed(1)
    AutoModel.from_config(DebertaV2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                          **settings)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), "cpu")
    encoded = encode_pairs(lm, [Pair(**p) for p in EXTRA_PAIRS[2:4]], 128)
    out = capture_query_key(lm, encoded)
    assert sorted(out["extra"]) == sorted(variant["pos_att_type"])
    np.testing.assert_allclose(out["scaling"], (lm.head_dim * (1 + len(variant["pos_att_type"]))) ** -0.5)
    ref = eager_reference(tmp_path)
    logits = np.einsum("blhid,blhjd->blhij", out["q"].astype(np.float64), out["k"].astype(np.float64))
    logits = logits * out["scaling"][None, :, None, None, None] + sum(out["extra"].values())
    for b, e in enumerate(encoded):
        n = len(e.input_ids)
        with torch.inference_mode():
            want = torch.stack(ref(**alone_inputs(e), output_attentions=True).attentions, 1)[0].numpy()
        np.testing.assert_allclose(out["attention"][b, :, :, :n, :n], want, atol=1e-5)
        recon = torch.softmax(torch.as_tensor(logits[b, :, :, :n, :n]), -1).numpy()
        np.testing.assert_allclose(recon, want, atol=1e-5)


def test_compute_dtype_is_part_of_the_score_cache_key(tmp_path, monkeypatch):
    """Scores computed in one precision are never served for another."""
    import generator.pipeline as pipeline
    from generator.config import load_config, load_corpus

    keys = {}
    monkeypatch.setattr(pipeline.cache, "cached", lambda folder, kind, key, *rest: key)
    for dtype in ("float32", "bfloat16"):
        cfg = load_config(write_project(tmp_path / dtype, corpus_items(), compute={"device": "cpu", "dtype": dtype}))
        run = pipeline.BuildRun(cfg, load_corpus(cfg.corpus_path), progress=False)
        keys[dtype], _ = pipeline.score_stage(run)
    assert keys["float32"] != keys["bfloat16"]


@pytest.mark.parametrize("kind", ["albert", "distilbert", "deberta-v2", "mpnet", "modernbert"])
def test_head_ablation_reusing_lower_layers_equals_full_passes(kind, loaded):
    """Layer replay (recompute only the layers from the masked head's up)
    gives the same ablation as full passes (ModernBERT too); ALBERT, whose layers share one
    module, never replays."""
    from generator.analysis.importance import ablation_importance
    from generator.analysis.objective import SimilarityObjective

    lm, _ = loaded(kind)
    objective = SimilarityObjective(lm, [Pair(**p) for p in EXTRA_PAIRS[:3]], batch_size=2, max_length=64)
    heads = [(0, 1), (1, 2)]
    fast = ablation_importance(objective, heads, reuse_lower_layers=True)
    full = ablation_importance(objective, heads, reuse_lower_layers=False)
    np.testing.assert_allclose(fast.masked_loss, full.masked_loss, atol=1e-6, equal_nan=True)
    for layer, head in heads:
        assert fast.effect[layer, head] > 0
