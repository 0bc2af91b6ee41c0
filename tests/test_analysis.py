"""Known-answer tests of generator.analysis: head masking and gating, the
objectives, ablation and gradient importance, integrated gradients,
perturbed masking and the head map.

The packaged default model (all-MiniLM-L6-v2) is loaded once; everything
that needs a masked-LM or classification head, or a direct (slow) reference
computation, runs on tiny random BERTs built from a small BertConfig.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from generator.analysis.attribution import integrated_gradients
from generator.analysis.headmap import head_distances, head_map
from generator.analysis.importance import (ablation_importance, bootstrap_ablation, gate_heads, gradient_importance,
                                           group_masking, heads_with_label, importance_order, mask_heads,
                                           rank_correlation)
from generator.analysis.objective import (ClassificationObjective, MaskedLMObjective, ObjectiveResult,
                                          SimilarityObjective, classification, metric_change, mlm,
                                          similarity)
from generator.analysis.perturbed import impact_matrix, masked_lm_head, word_units
from generator.config import DEFAULT_MODEL, Pair
from generator.errors import AtlasError
from generator.model import LoadedModel, attention_for, encode_pairs, load_model

VIG = Pair(id="vig-store", a="I went to the store.", b="At the store, I bought fresh strawberries.", label=2)
PAIRS = [
    VIG,
    Pair(id="dog", a="The dog chased the other dog across the yard.", b="The dog was faster.", label=1),
    Pair(id="cat", a="The cat sat on the mat, and the mat was warm.", b="A cat was sitting on a warm mat.", label=4),
    Pair(id="rain", a="It rained all day in the city.", b="The city was wet after a day of rain.", label=3),
]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    torch.manual_seed(0)
    return load_model(DEFAULT_MODEL, "cpu")


@pytest.fixture
def one_thread():
    """Tiny models and one-sequence reference loops run faster on one thread
    (and do not collapse when other processes share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(lm: LoadedModel, cls=BertModel, **extra) -> LoadedModel:
    """A random 2-layer, 2-head BERT (hidden 32) with the default tokenizer."""
    config = BertConfig(vocab_size=lm.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        attn_implementation="eager", **extra)
    torch.manual_seed(0)
    model = cls(config).eval()
    return LoadedModel(model=model, tokenizer=lm.tokenizer, device=torch.device("cpu"), name_or_path="tiny",
                       layers=2, heads=2, head_dim=16)


def _inputs(lm: LoadedModel, pair: Pair) -> dict[str, torch.Tensor]:
    return dict(lm.tokenizer(pair.a, pair.b, return_tensors="pt"))


# ------------------------------------------------------------ masking / gating

def _capture_attention_output_input(lm: LoadedModel, layer: int, inputs) -> torch.Tensor:
    """The input of attention_output(layer) as the module receives it (after
    any pre-hook): forward hooks see the arguments the pre-hooks returned."""
    seen = {}
    handle = lm.attention_output(layer).register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            lm.model(**inputs)
    finally:
        handle.remove()
    return seen["x"]


def test_mask_heads_zeroes_exactly_that_slice(lm):
    inputs = _inputs(lm, VIG)
    layer, head, d = 2, 5, lm.head_dim
    before = _capture_attention_output_input(lm, layer, inputs)
    earlier = _capture_attention_output_input(lm, layer - 1, inputs)
    with mask_heads(lm, [(layer, head)]):
        after = _capture_attention_output_input(lm, layer, inputs)
        earlier_after = _capture_attention_output_input(lm, layer - 1, inputs)
    sl = slice(head * d, (head + 1) * d)
    assert before[..., sl].abs().sum() > 0
    assert torch.count_nonzero(after[..., sl]) == 0
    others = torch.ones(before.shape[-1], dtype=torch.bool)
    others[sl] = False
    assert torch.equal(after[..., others], before[..., others])  # the other heads' slices, bit for bit
    assert torch.equal(earlier_after, earlier)  # an earlier layer is untouched
    for i in range(lm.layers):
        assert not lm.attention_output(i)._forward_pre_hooks  # hooks removed on exit


def test_mask_heads_rejects_bad_heads(lm):
    with pytest.raises(ValueError, match="out of range"):
        with mask_heads(lm, [(lm.layers, 0)]):
            pass
    with pytest.raises(ValueError, match="pair of integers"):
        with mask_heads(lm, [(1,)]):
            pass
    assert not any(lm.attention_output(i)._forward_pre_hooks for i in range(lm.layers))


def test_gate_of_ones_changes_nothing_and_zero_gate_equals_mask(lm):
    inputs = _inputs(lm, VIG)
    with torch.no_grad():
        plain = lm.model(**inputs).last_hidden_state
        with gate_heads(lm, torch.ones(lm.layers, lm.heads)):
            shared = lm.model(**inputs).last_hidden_state
        with gate_heads(lm, torch.ones(1, lm.layers, lm.heads, requires_grad=True)):
            per_row = lm.model(**inputs).last_hidden_state
        gates = torch.ones(lm.layers, lm.heads)
        gates[3, 1] = 0.0
        with gate_heads(lm, gates):
            gated0 = lm.model(**inputs).last_hidden_state
        with mask_heads(lm, [(3, 1)]):
            masked = lm.model(**inputs).last_hidden_state
    assert torch.equal(shared, plain)
    assert torch.equal(per_row, plain)
    assert torch.equal(gated0, masked)
    assert not torch.equal(masked, plain)
    with pytest.raises(ValueError):
        with gate_heads(lm, torch.ones(lm.heads, lm.layers + 1)):
            pass


# --------------------------------------------------------------- objectives

def test_similarity_objective_matches_mean_pooled_cosine(lm):
    result = similarity(lm, PAIRS, batch_size=3)
    tok = lm.tokenizer
    for k, pair in enumerate(PAIRS):
        with torch.no_grad():
            ea, eb = (lm.model(**tok(s, return_tensors="pt")).last_hidden_state[0].mean(0) for s in (pair.a, pair.b))
        assert result.per_pair[k] == pytest.approx(float(torch.cosine_similarity(ea, eb, dim=0)), abs=1e-5)
    assert result.metric_name == "spearman"
    from scipy.stats import spearmanr
    assert result.metric == pytest.approx(spearmanr(result.per_pair, [p.label for p in PAIRS]).statistic)
    unlabelled = similarity(lm, [p.model_copy(update={"label": None}) for p in PAIRS])
    assert unlabelled.metric_name == "mean_similarity"
    assert unlabelled.metric == pytest.approx(result.per_pair.mean())


def test_similarity_embeds_each_distinct_sentence_once(lm):
    """A query paired with several titles (and sentences reused across pairs)
    is embedded once per evaluation; the cosines equal the pair-by-pair ones."""
    pairs = [Pair(id=f"q{k}", a="How do I renew a passport?", b=b, label=k) for k, b in enumerate(
        ["Renewing your passport online", "Passport renewal fees", "How do I renew a passport?"])]
    pairs += [Pair(id="back", a="Passport renewal fees", b="How do I renew a passport?", label=0)]
    objective = SimilarityObjective(lm, pairs, batch_size=2)
    rows = []
    hook = lm.model.embeddings.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    try:
        got = objective.evaluate()
    finally:
        hook.remove()
    assert sum(rows) == 3  # three distinct sentences among eight
    with torch.no_grad():
        pairwise = np.concatenate([objective._cosines(b).double().numpy() for b in objective._batches])
    order = np.concatenate(objective._batches)
    np.testing.assert_allclose(got.per_pair[order], pairwise, atol=1e-6)
    assert got.per_pair[2] == pytest.approx(1.0, abs=1e-6)  # a sentence against itself


def test_metric_change_definitions():
    a = ObjectiveResult("similarity", "mean_similarity", 0.5, np.array([0.4, 0.6]))
    b = ObjectiveResult("similarity", "mean_similarity", 0.5, np.array([0.5, 0.5]))
    assert metric_change(a, b) == pytest.approx(0.1)  # mean |change|, although the mean did not move
    c = ObjectiveResult("similarity", "spearman", 0.8, np.array([0.4, 0.6]))
    d = ObjectiveResult("similarity", "spearman", 0.6, np.array([0.4, 0.6]))
    assert metric_change(c, d) == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        metric_change(a, c)


def test_mlm_pseudo_log_likelihood_matches_direct_loop(lm, one_thread):
    small = tiny(lm, BertForMaskedLM)
    pairs = PAIRS[:2]
    result = mlm(small, pairs, batch_size=7)
    for k, pair in enumerate(pairs):
        enc = small.tokenizer(pair.a, pair.b, return_tensors="pt", return_special_tokens_mask=True)
        ids, special = enc["input_ids"][0], enc.pop("special_tokens_mask")[0]
        pll = 0.0
        for t in range(len(ids)):
            if special[t]:
                continue
            masked = ids.clone()
            masked[t] = small.tokenizer.mask_token_id
            with torch.no_grad():
                logits = small.model(input_ids=masked[None], token_type_ids=enc["token_type_ids"]).logits[0, t]
            pll += float(torch.log_softmax(logits, -1)[ids[t]])
        assert result.per_pair[k] == pytest.approx(pll, abs=1e-4)
        assert result.tokens[k] == int((~special.bool()).sum())
    assert result.metric == pytest.approx(result.per_pair.sum() / result.tokens.sum())
    capped = MaskedLMObjective(small, pairs, max_positions=3, seed=1)
    assert list(capped.tokens) == [3, 3]
    assert capped.evaluate().per_pair.tolist() == capped.evaluate().per_pair.tolist()  # same seed, same tokens


def test_mlm_and_classification_need_their_heads(lm, one_thread, tmp_path):
    with pytest.raises(AtlasError, match="masked-LM head"):
        MaskedLMObjective(lm, PAIRS)
    with pytest.raises(AtlasError, match="no trained masked-LM head"):
        load_model(DEFAULT_MODEL, "cpu", task="mlm")
    small = tiny(lm, BertForMaskedLM)
    small.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), "cpu", task="mlm")
    assert mlm(loaded, PAIRS[:1]).per_pair[0] == pytest.approx(mlm(small, PAIRS[:1]).per_pair[0], abs=1e-5)


def test_classification_accuracy_and_label_checks(lm, one_thread):
    small = tiny(lm, BertForSequenceClassification, num_labels=5)
    result = classification(small, PAIRS, batch_size=3)
    with torch.no_grad():
        pred = [int(small.model(**_inputs(small, p)).logits.argmax()) for p in PAIRS]
    assert result.predictions.tolist() == pred
    assert result.metric == pytest.approx(np.mean([p == q.label for p, q in zip(pred, PAIRS)]))
    with pytest.raises(AtlasError, match="pair 1 .*'label'"):
        ClassificationObjective(small, [PAIRS[0], PAIRS[1].model_copy(update={"label": 7})])
    with pytest.raises(AtlasError, match="classification head"):
        ClassificationObjective(lm, PAIRS)


# ---------------------------------------------------------------- importance

def test_ablation_baseline_and_changes(lm):
    objective = SimilarityObjective(lm, PAIRS)
    heads = [(0, 3), (4, 7), (5, 9)]
    result = ablation_importance(objective, heads)
    plain = similarity(lm, PAIRS)
    assert result.baseline.metric == plain.metric
    np.testing.assert_array_equal(result.baseline.per_pair, plain.per_pair)
    assert np.isnan(result.metric_change[1, 1]) and result.metric_change.shape == (lm.layers, lm.heads)
    full = ablation_importance(objective, heads, reuse_lower_layers=False)
    np.testing.assert_array_equal(result.metric_change, full.metric_change)  # replaying lower layers is exact
    np.testing.assert_array_equal(result.effect, full.effect)
    target = (np.array([p.label for p in PAIRS]) - 1) / 3  # labels 1..4 scaled to [0, 1]
    base_loss = (plain.per_pair - target) ** 2
    for layer, head in heads:
        with mask_heads(lm, [(layer, head)]):
            masked = similarity(lm, PAIRS)
        assert result.metric_change[layer, head] == pytest.approx(masked.metric - plain.metric, abs=1e-12)
        assert result.metric[layer, head] == pytest.approx(masked.metric, abs=1e-12)
        delta = (masked.per_pair - target) ** 2 - base_loss  # CosineSimilarityLoss per pair
        assert result.effect[layer, head] == pytest.approx(np.mean(np.abs(delta)), abs=1e-12)
        assert result.loss_change[layer, head] == pytest.approx(np.mean(delta), abs=1e-12)


def test_gradient_importance_matches_finite_differences(lm):
    pair = VIG.model_copy(update={"label": None})  # loss = cosine similarity itself
    objective = SimilarityObjective(lm, [pair])
    grad = gradient_importance(objective)
    assert grad.pairs == 1
    np.testing.assert_allclose(np.linalg.norm(grad.normalized, axis=1), 1.0, rtol=1e-9)
    eps = 1e-2
    for flat in np.argsort(grad.raw.reshape(-1))[-2:]:
        layer, head = divmod(int(flat), lm.heads)
        values = []
        for sign in (1, -1):
            gates = torch.ones(lm.layers, lm.heads)
            gates[layer, head] += sign * eps
            with gate_heads(lm, gates):
                values.append(objective.evaluate().per_pair[0])
        assert grad.raw[layer, head] == pytest.approx(abs(values[0] - values[1]) / (2 * eps), rel=0.05, abs=1e-4)


def test_gradient_importance_is_mean_of_absolute_per_pair_gradients(lm):
    pairs = [p.model_copy(update={"label": None}) for p in PAIRS[:3]]
    together = gradient_importance(SimilarityObjective(lm, pairs, batch_size=2)).raw
    alone = np.mean([gradient_importance(SimilarityObjective(lm, [p])).raw for p in pairs], axis=0)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-7)


def test_rank_correlation_and_label_lookup():
    a = np.array([[0.1, 0.5], [0.3, np.nan]])
    g = np.array([[1.0, 5.0], [3.0, 2.0]])
    assert rank_correlation(a, g) == pytest.approx(1.0)  # the NaN head is left out
    assert rank_correlation(a, -g) == pytest.approx(-1.0)
    labels = np.array([["next", "broad"], ["broad", "mixed"]], dtype=object)
    assert heads_with_label(labels, "broad") == [(0, 1), (1, 0)]


def test_like_for_like_rank_correlation_reproduces_a_literal_computation(lm, one_thread):
    """Ablation effect and gradient importance of a tiny BERT, computed with
    plain loops (one pair at a time, one head at a time, autograd on a gate
    tensor), then Spearman's rho with scipy: the library gives the same."""
    from scipy.stats import spearmanr

    small = tiny(lm)
    small.model.double()  # float64 throughout: batching and padding then change nothing visible
    objective = SimilarityObjective(small, PAIRS, batch_size=3)
    abl = ablation_importance(objective)
    grad = gradient_importance(objective)
    target = (np.array([p.label for p in PAIRS]) - 1) / 3
    effect = np.zeros((2, 2))
    gradient = np.zeros((2, 2))
    for p, pair in enumerate(PAIRS):
        def loss(gates):
            with gate_heads(small, gates):
                cos = SimilarityObjective(small, [pair.model_copy(update={"label": None})])._cosines([0])[0]
            return (cos - target[p]) ** 2
        gates = torch.ones(2, 2, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss(gates), gates)
        gradient += np.abs(g.double().numpy()) / len(PAIRS)
        with torch.no_grad():
            base = float(loss(torch.ones(2, 2)))
            for layer in range(2):
                for head in range(2):
                    gates = torch.ones(2, 2)
                    gates[layer, head] = 0.0
                    effect[layer, head] += abs(float(loss(gates)) - base) / len(PAIRS)
    np.testing.assert_allclose(abl.effect, effect, rtol=1e-8)
    np.testing.assert_allclose(grad.raw, gradient, rtol=1e-6)  # the library's gates are float32
    want = spearmanr(effect.reshape(-1), gradient.reshape(-1)).statistic
    assert rank_correlation(abl.effect, grad.raw) == pytest.approx(want, abs=1e-12)


def test_bootstrap_intervals_match_a_literal_bootstrap(lm, one_thread):
    """The intervals equal a loop that draws the same resamples, recomputes
    Spearman's rho (scipy) masked and unmasked and the mean |loss change|,
    and takes the 2.5 / 97.5 percentiles."""
    from scipy.stats import spearmanr

    small = tiny(lm)
    pairs = PAIRS + [Pair(id=f"x{k}", a=f"Sentence number {k} is here.", b=f"Here is sentence {k + 1}.",
                          label=float(k % 5)) for k in range(6)]
    objective = SimilarityObjective(small, pairs)
    abl = ablation_importance(objective)
    ci = bootstrap_ablation(abl, labels=objective.labels, resamples=200, seed=7)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, len(pairs), size=(200, len(pairs)))
    labels = objective.labels
    for layer in range(2):
        for head in range(2):
            effects, changes, signed = [], [], []
            for idx in draws:
                d = abl.masked_loss[layer, head, idx] - abl.baseline.loss[idx]
                effects.append(np.mean(np.abs(d)))
                signed.append(np.mean(d))
                changes.append(spearmanr(abl.masked_per_pair[layer, head, idx], labels[idx]).statistic
                               - spearmanr(abl.baseline.per_pair[idx], labels[idx]).statistic)
            np.testing.assert_allclose(ci.effect[layer, head], np.percentile(effects, [2.5, 97.5]), rtol=1e-10)
            np.testing.assert_allclose(ci.loss_change[layer, head], np.percentile(signed, [2.5, 97.5]), rtol=1e-10)
            np.testing.assert_allclose(ci.metric_change[layer, head], np.percentile(changes, [2.5, 97.5]),
                                       rtol=1e-9, atol=1e-12)
            low, high = ci.metric_change[layer, head]
            assert ci.metric_change_overlaps_zero[layer, head] == (low <= 0 <= high)
    # the point estimate lies inside its interval
    assert np.all(ci.effect[..., 0] <= abl.effect) and np.all(abl.effect <= ci.effect[..., 1])


def test_importance_order_hurts_most_first():
    change = np.array([[-0.02, 0.01], [-0.05, -0.02]])  # Spearman change when masked: lower = hurts
    effect = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert importance_order(change, effect, directed=True) == [(1, 0), (1, 1), (0, 0), (0, 1)]  # tie by effect
    assert importance_order(-change, effect, directed=True, higher_is_better=False)[0] == (1, 0)
    assert importance_order(change, effect, directed=False) == [(1, 1), (1, 0), (0, 1), (0, 0)]
    change[0, 0] = np.nan
    assert importance_order(change, effect, directed=True)[-1] == (0, 0)


def test_group_masking_moves_only_later_layers(lm):
    objective = SimilarityObjective(lm, PAIRS)
    encoded = encode_pairs(lm, PAIRS, 64)
    group = [(2, 0), (2, 4)]
    result = group_masking(objective, encoded, group)
    assert np.isnan(result.movement[2, 0]) and np.isnan(result.movement[2, 4])
    assert np.all(result.movement[:2] == 0) and np.nansum(result.movement[2]) == 0  # layers <= 2 cannot move
    assert result.top[0] > 2 and result.movement[result.top] == np.nanmax(result.movement)
    n = len(encoded[result.pair_index].input_ids)
    assert result.before.shape == result.after.shape == (n, n)
    np.testing.assert_allclose(result.before, attention_for(lm, [encoded[result.pair_index]])[0][result.top])
    assert result.change == pytest.approx(result.masked.metric - result.baseline.metric)


# --------------------------------------------------------------- attribution

def test_integrated_gradients_completeness_on_vig_pair(lm):
    result = integrated_gradients(lm, VIG, n_steps=50)
    assert result.tokens[0] == "[CLS]" and result.attributions.shape == (len(result.tokens),)
    assert result.relative_error < 0.05
    assert result.total == pytest.approx(result.value - result.baseline_value, rel=0.05)
    assert result.value == pytest.approx(similarity(lm, [VIG]).per_pair[0], abs=1e-5)  # f is the objective
    assert np.all(result.attributions[result.segment == -1] == 0)  # kept in the baseline


# --------------------------------------------------------- perturbed masking

def _impact_direct(lm: LoadedModel, ids: torch.Tensor, types: torch.Tensor, words: list[list[int]], layer: int):
    """Wu et al.'s whole-word impact, one forward pass at a time."""
    def hidden(masked: list[int]) -> torch.Tensor:
        x = ids.clone()
        x[masked] = lm.tokenizer.mask_token_id
        with torch.no_grad():
            return lm.model(input_ids=x[None], token_type_ids=types[None],
                            output_hidden_states=True).hidden_states[layer + 1][0]
    out = np.full((len(ids), len(ids)), np.nan)
    for wi in words:
        hi = hidden(wi)[wi].mean(0)
        for wj in words:
            value = 0.0 if wi == wj else float(torch.linalg.vector_norm(hi - hidden(wi + wj)[wi].mean(0)))
            for i in wi:
                out[i, wj] = value
    return out


def test_whole_word_units_cover_every_piece(lm):
    pair = encode_pairs(lm, [VIG], 64)[0]
    tokens = pair.layout.tokens
    units = [[tokens[t] for t in u] for u in word_units(pair.layout)]
    assert ["straw", "##berries"] in units  # masking "strawberries" masks both pieces
    assert sum(len(u) for u in units) == int((~pair.layout.special).sum())


@pytest.mark.parametrize("layer", [-1, 0])
def test_perturbed_masking_matches_direct_computation(lm, one_thread, layer):
    small = tiny(lm)
    pair = encode_pairs(small, [VIG], 64)[0]
    got = impact_matrix(small, pair, layer=layer, batch_size=17)
    n = len(pair.input_ids)
    words = [u.tolist() for u in word_units(pair.layout)]
    want = _impact_direct(small, torch.as_tensor(pair.input_ids), torch.as_tensor(pair.token_type_ids),
                          words, layer % small.layers)
    assert got.shape == (n, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    straw = pair.layout.tokens.index("straw")
    assert got[straw, straw + 1] == 0 and got[straw + 1, 0 + 1] == got[straw, 1]  # one value per word pair
    assert np.isnan(got[0]).all() and np.isnan(got[:, -1]).all()
    with pytest.raises(ValueError):
        impact_matrix(small, pair, layer=2)


def test_whole_word_masking_masks_every_piece(lm, one_thread):
    """The sequences impact_matrix runs with "strawberries" masked hold no
    piece of it: every forward pass is captured and checked."""
    small = tiny(lm)
    pair = encode_pairs(small, [VIG], 64)[0]
    tokens = list(pair.layout.tokens)
    straw = tokens.index("straw")
    seen = []
    handle = small.model.embeddings.register_forward_hook(lambda m, args, out: None)
    handle.remove()
    handle = small.model.embeddings.word_embeddings.register_forward_hook(
        lambda m, args, out: seen.append(args[0].clone()))
    try:
        impact_matrix(small, pair, batch_size=1000)
    finally:
        handle.remove()
    rows = torch.cat(seen)
    mask = small.tokenizer.mask_token_id
    hit = rows[:, straw] == mask
    assert hit.any()
    assert torch.all(rows[hit, straw + 1] == mask)  # never "straw" hidden while "##berries" shows
    assert torch.all((rows[:, straw] == mask) == (rows[:, straw + 1] == mask))


def test_masked_lm_head_detection(lm, tmp_path):
    assert masked_lm_head(lm) is None  # all-MiniLM-L6-v2: a bare BertModel
    small = tiny(lm, BertForMaskedLM)
    small.model.config.architectures = ["BertForMaskedLM"]
    assert "BertForMaskedLM" in masked_lm_head(small)
    bare = tiny(lm)
    bare.model.config.architectures = ["BertModel"]
    tiny(lm, BertForMaskedLM).model.save_pretrained(tmp_path)
    from dataclasses import replace
    # the weight names alone tell, when the loaded config does not say so
    assert masked_lm_head(replace(bare, name_or_path=str(tmp_path))).startswith("weights: cls.predictions")


# ------------------------------------------------------------------ head map

def test_head_distances_and_map():
    rng = np.random.default_rng(1)
    attentions = []
    for n in (5, 8):
        a = rng.dirichlet(np.ones(n), size=(2, 3, n))  # [layers 2, heads 3, n, n]
        a[1, 2] = a[0, 0]  # head (1, 2) attends exactly like head (0, 0)
        a[0, 1] = np.eye(n)  # head (0, 1): each token to itself
        a[0, 2] = np.roll(np.eye(n), 1, axis=1)  # head (0, 2): each token to the next: disjoint from (0, 1)
        attentions.append(a)
    d = head_distances(attentions, block=4)
    assert d.shape == (6, 6)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    np.testing.assert_allclose(d, d.T)
    assert d[0, 5] == pytest.approx(0.0, abs=1e-12)
    assert d[1, 2] == pytest.approx(1.0)
    # the definition, literally: mean over pairs and query rows of the JS divergence in bits
    # (scipy's Jensen-Shannon distance is its square root)
    rows = [jensenshannon(a[0, 0], a[1, 0], base=2, axis=-1) ** 2 for a in attentions]
    assert d[0, 3] == pytest.approx(np.concatenate(rows).mean())
    coords = head_map(d)
    assert coords.shape == (6, 2) and np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, head_map(d))  # random_state=0: deterministic
    with pytest.raises(ValueError):
        head_distances([attentions[0], attentions[1][:1]])


# ------------------------------------------------------------ input setting

def test_joint_input_pools_each_sentence_over_its_own_tokens(lm):
    """analysis.input: joint encodes [CLS] a [SEP] b [SEP] once and mean-pools
    each sentence's own tokens; computed here literally, one pair at a time."""
    objective = SimilarityObjective(lm, PAIRS, batch_size=3, input="joint")
    got = objective.evaluate()
    for p, pair in enumerate(PAIRS):
        enc = lm.tokenizer(pair.a, pair.b, return_tensors="pt")
        with torch.no_grad():
            hidden = lm.model(**enc).last_hidden_state[0]
        seq = enc.sequence_ids(0)
        ids = enc["input_ids"][0].tolist()
        special = {lm.tokenizer.cls_token_id, lm.tokenizer.sep_token_id}
        a = [t for t, s in enumerate(seq) if s == 0 and ids[t] not in special]
        b = [t for t, s in enumerate(seq) if s == 1 and ids[t] not in special]
        want = torch.nn.functional.cosine_similarity(hidden[a].mean(0), hidden[b].mean(0), dim=0)
        assert got.per_pair[p] == pytest.approx(float(want), abs=1e-5)
    separate = SimilarityObjective(lm, PAIRS).evaluate()
    assert not np.allclose(got.per_pair, separate.per_pair, atol=1e-3)  # the two inputs read differently
    grad = gradient_importance(objective)  # one row per pair: the gradient batches follow the input
    assert grad.pairs == len(PAIRS) and np.all(np.isfinite(grad.raw))
    with pytest.raises(AtlasError):
        SimilarityObjective(lm, PAIRS, input="both")


def test_run_analyses_perturbed_masking_settings(lm, one_thread):
    """perturbed_masking: auto skips a checkpoint without a masked-LM head and
    says why; true runs it, recording the mask token and why the reading is
    weaker. The objective truncates at the model's own position limit."""
    from generator.analysis.run import model_position_limit, run_analyses
    from generator.config import AnalysisConfig

    small = tiny(lm)
    encoded = encode_pairs(small, PAIRS[:2], 64)
    labels = np.full((2, 2), "mixed", dtype=object)
    settings = dict(importance=False, group_masking=False, attribution=False, head_map=False)
    auto = run_analyses(AnalysisConfig(**settings), small, small, PAIRS[:2], encoded, labels, [0], 8)
    assert auto.impact == {} and "no masked-LM head" in auto.skipped["perturbed_masking"]
    forced = run_analyses(AnalysisConfig(perturbed_masking=True, **settings), small, small, PAIRS[:2], encoded,
                          labels, [0], 8)
    assert set(forced.impact) == {0} and forced.impact_mask_token == "[MASK]"
    assert "never trained to fill [MASK]" in forced.impact_note and "perturbed_masking" not in forced.skipped
    assert forced.inputs["perturbed_masking"]["input"] == "joint"
    assert model_position_limit(small) == 128  # the tiny model's positions
    # a sentence-transformers checkpoint is used at its own max_seq_length (sentence_bert_config.json), under 512
    assert model_position_limit(lm) == 256 < lm.model.config.max_position_embeddings


def test_run_analyses_attribution_reading_and_skip(lm, one_thread):
    """Attribution states f(baseline) in its reading sentence; with an
    objective other than similarity it does not run and says why."""
    from generator.analysis.run import run_analyses
    from generator.config import AnalysisConfig

    off = dict(importance=False, group_masking=False, perturbed_masking=False, head_map=False)
    small = tiny(lm)
    encoded = encode_pairs(small, PAIRS[:2], 64)
    labels = np.full((2, 2), "mixed", dtype=object)
    res = run_analyses(AnalysisConfig(attribution_steps=4, **off), small, small, PAIRS[:2], encoded, labels, [1], 8)
    at = res.attributions[1]
    assert f"f(baseline) = {at['baseline_value']:.3f}" in at["how_to_read"]
    assert res.inputs["attribution"]["input"] == "separate"
    assert "analysis.perturbed_masking = false" in res.skipped["perturbed_masking"]
    mlm_lm = tiny(lm, BertForMaskedLM)
    res = run_analyses(AnalysisConfig(objective="mlm", **off), mlm_lm, mlm_lm, PAIRS[:2], encoded, labels, [1], 8)
    assert res.attributions == {} and "'mlm'" in res.skipped["attribution"]
