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
from generator.analysis.importance import (ablation_importance, gate_heads, gradient_importance, group_masking,
                                           heads_with_label, mask_heads, rank_correlation)
from generator.analysis.objective import (ClassificationObjective, MaskedLMObjective, ObjectiveResult,
                                          SimilarityObjective, classification, metric_change, mlm,
                                          similarity)
from generator.analysis.perturbed import impact_matrix
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
    assert np.isnan(result.change[1, 1]) and result.change.shape == (lm.layers, lm.heads)
    full = ablation_importance(objective, heads, reuse_lower_layers=False)
    np.testing.assert_array_equal(result.change, full.change)  # replaying lower layers is exact
    for layer, head in heads:
        with mask_heads(lm, [(layer, head)]):
            masked = similarity(lm, PAIRS)
        assert result.change[layer, head] == pytest.approx(masked.metric - plain.metric, abs=1e-12)
        assert result.metric[layer, head] == pytest.approx(masked.metric, abs=1e-12)


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
    a = np.array([[0.1, -0.5], [0.3, np.nan]])
    g = np.array([[1.0, 5.0], [3.0, 2.0]])
    assert rank_correlation(a, g) == pytest.approx(1.0)  # |change| ranks 0.1 < 0.3 < 0.5
    assert rank_correlation(a, g, absolute=False) == pytest.approx(0.5)  # -change ranks -0.3 < -0.1 < 0.5
    labels = np.array([["next", "broad"], ["broad", "mixed"]], dtype=object)
    assert heads_with_label(labels, "broad") == [(0, 1), (1, 0)]


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

def _impact_direct(lm: LoadedModel, ids: torch.Tensor, types: torch.Tensor, positions: list[int], layer: int):
    def hidden(masked: list[int]) -> torch.Tensor:
        x = ids.clone()
        x[masked] = lm.tokenizer.mask_token_id
        with torch.no_grad():
            return lm.model(input_ids=x[None], token_type_ids=types[None],
                            output_hidden_states=True).hidden_states[layer + 1][0]
    out = np.full((len(ids), len(ids)), np.nan)
    for i in positions:
        hi = hidden([i])[i]
        for j in positions:
            out[i, j] = 0.0 if i == j else float(torch.linalg.vector_norm(hi - hidden([i, j])[i]))
    return out


@pytest.mark.parametrize("include_special,layer", [(False, -1), (True, 0)])
def test_perturbed_masking_matches_direct_computation(lm, one_thread, include_special, layer):
    small = tiny(lm)
    pair = encode_pairs(small, [VIG], 64)[0]
    got = impact_matrix(small, pair, layer=layer, batch_size=17, include_special=include_special)
    n = len(pair.input_ids)
    positions = [i for i in range(n) if include_special or not pair.layout.special[i]]
    want = _impact_direct(small, torch.as_tensor(pair.input_ids), torch.as_tensor(pair.token_type_ids),
                          positions, layer % small.layers)
    assert got.shape == (n, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.all(np.diag(got)[positions] == 0)
    if not include_special:
        assert np.isnan(got[0]).all() and np.isnan(got[:, -1]).all()
    with pytest.raises(ValueError):
        impact_matrix(small, pair, layer=2)


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
