"""Which heads matter for an objective: masking, ablation, gradients, groups.

Head ``h`` of layer ``l`` contributes to the layer's output only through its
slice ``[:, :, h * head_dim:(h + 1) * head_dim]`` of the input of
``attention_output(l)`` (the ``W_O`` projection of Vaswani et al. 2017: the
concatenated head contexts; where it is in each architecture is in
:mod:`generator.architectures`). Masking multiplies that slice by 0; gating
multiplies it by a scalar ``xi_h`` (Michel et al. 2019, "Are Sixteen Heads
Really Better than One?", eq. 2), both with forward pre-hooks on that module
(:func:`generator.architectures.output_projection_hooks`; a projection shared
by every layer, as in ALBERT, acts on the call of the named layer only), so
nothing of the model's code is forked and every objective of
:mod:`generator.analysis.objective` runs unchanged under them.

Heads are ``(layer, head)``, 0-based; arrays over heads are ``[layers, heads]``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from generator.analysis.objective import Objective, ObjectiveResult, corpus_metric, metric_change, spearman
from generator.architectures import output_projection_hooks
from generator.model import (EncodedPair, LoadedModel, attention_for, base_model, encoder_layers,
                             length_sorted_batches, module_hooks)

log = logging.getLogger(__name__)

Head = tuple[int, int]


def _check_heads(lm: LoadedModel, heads: Iterable[Head]) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(f"a head must be a (layer, head) pair of integers, not {item!r}") from None
        if not (0 <= layer < lm.layers and 0 <= head < lm.heads):
            raise ValueError(f"head ({layer}, {head}) is out of range: the model has {lm.layers} layers of "
                             f"{lm.heads} heads (0-based)")
        by_layer.setdefault(layer, [])
        if head not in by_layer[layer]:
            by_layer[layer].append(head)
    return by_layer


@contextlib.contextmanager
def mask_heads(lm: LoadedModel, heads: Iterable[Head]) -> Iterator[None]:
    """Zero the given heads' contexts while the ``with`` block runs.

    ``heads``: ``(layer, head)`` pairs (duplicates allowed, empty = no-op).
    A forward pre-hook on ``lm.attention_output(layer)`` multiplies the
    input of each affected layer ``[batch, seq, heads * head_dim]`` by a 0/1 vector,
    so the masked slices become exactly 0 and every other slice is unchanged
    bit for bit (``x * 1.0 == x``). This is the ``head_mask`` of older
    transformers (Michel et al. 2019 section 2.2, ``xi_h = 0``). Hooks are
    removed on exit, also after an exception. Raises :class:`ValueError` for a
    head out of range or not a pair of integers.
    """
    def hook_of(hs: list[int]):
        keep = torch.ones(lm.heads, lm.head_dim)
        keep[hs] = 0.0
        keep = keep.reshape(-1)

        def transform(x):
            return x * keep.to(device=x.device, dtype=x.dtype)
        return transform

    by_layer = _check_heads(lm, heads)
    with output_projection_hooks(lm.arch, base_model(lm.model), {layer: hook_of(hs) for layer, hs in by_layer.items()}):
        yield


@contextlib.contextmanager
def gate_heads(lm: LoadedModel, gates: torch.Tensor) -> Iterator[None]:
    """Multiply every head's context by a gate ``xi`` while the block runs.

    ``gates``: ``[layers, heads]`` (the same gate for every row of a batch) or
    ``[rows, layers, heads]`` (one gate per batch row, the form used for
    per-example gradients); it may require grad. Head ``h`` of layer ``l``
    contributes ``xi[l, h] * Att_h(x)`` to the multi-head attention (Michel et
    al. 2019, eq. 2): all gates 1 leaves the model unchanged. Raises
    :class:`ValueError` for a wrong shape; a ``[rows, ...]`` gate whose
    ``rows`` differs from the batch fails in the forward pass.
    """
    shape = tuple(gates.shape)
    if shape[-2:] != (lm.layers, lm.heads) or len(shape) not in (2, 3):
        raise ValueError(f"gates must be [layers, heads] = [{lm.layers}, {lm.heads}] or [rows, {lm.layers}, "
                         f"{lm.heads}], not {list(shape)}")
    def hook_of(layer: int):
        def transform(x):  # [R, T, H * d]
            g = gates[layer] if gates.dim() == 2 else gates[:, layer]  # [H] or [R, H]
            g = g.to(device=x.device, dtype=x.dtype).reshape(-1 if gates.dim() == 3 else 1, 1, lm.heads, 1)
            return (x.reshape(*x.shape[:-1], lm.heads, lm.head_dim) * g).reshape(x.shape)
        return transform

    with output_projection_hooks(lm.arch, base_model(lm.model), {layer: hook_of(layer) for layer in range(lm.layers)}):
        yield


def all_heads(lm: LoadedModel) -> list[Head]:
    """Every ``(layer, head)`` in layer-major order."""
    return [(layer, head) for layer in range(lm.layers) for head in range(lm.heads)]


def heads_with_label(labels: np.ndarray, label: str) -> list[Head]:
    """The heads whose label (``labels``: ``[layers, heads]`` of str, e.g. from
    :func:`generator.patterns.classify_all`) equals ``label``, layer-major."""
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(np.asarray(labels) == label))]


# ------------------------------------------------------------------ ablation

@dataclass(frozen=True)
class AblationImportance:
    """Each head masked alone (Michel et al. 2019, "Are Sixteen Heads Really
    Better than One?", section 3.1).

    ``baseline``: the objective with no head masked. Arrays ``[layers,
    heads]`` float64 (NaN for heads not evaluated):

    * ``effect``: ``mean_p |L'_p - L_p|``, the mean over pairs of the absolute
      change of each pair's own loss ``L_p`` (:attr:`ObjectiveResult.loss`)
      when the head alone is masked. It is the quantity Michel et al.'s
      gradient importance ``E_p |dL_p/dxi|`` approximates to first order
      (``L_p(xi=0) - L_p(xi=1) ~ -dL_p/dxi``), so the two compare like for like.
      Units: the objective's loss.
    * ``loss_change``: ``mean_p (L'_p - L_p)``, signed: > 0 when masking the
      head raises the loss on average (the head helps), < 0 when it lowers it.
    * ``metric_change``: ``masked.metric - baseline.metric``, the signed change
      of the corpus metric (e.g. Spearman's rho between similarity and labels);
      a rank statistic of the whole corpus, not a per-pair quantity.
    * ``metric``: the corpus metric with that head masked.

    ``masked_per_pair`` / ``masked_loss``: ``[layers, heads, pairs]`` the
    per-pair value and loss with that head masked (what the bootstrap of
    :func:`bootstrap_ablation` resamples).
    """

    baseline: ObjectiveResult
    effect: np.ndarray
    loss_change: np.ndarray
    metric_change: np.ndarray
    metric: np.ndarray
    masked_per_pair: np.ndarray
    masked_loss: np.ndarray


class _LayerReplay:
    """Record the output of every encoder layer during one evaluation of an
    objective, then replay it, so that an evaluation with heads of layer ``l``
    masked computes only the embeddings and layers ``l ..`` (masking a head of
    layer ``l`` cannot change what layers ``< l`` compute).

    Replaying swaps ``forward`` of the layers ``< l`` for a function returning
    the recorded output of its k-th call (the identical object, so results are
    bit-identical with a full pass). It relies on the objective calling the
    model in the same order with the same inputs on every evaluation, which
    the objectives of :mod:`generator.analysis.objective` do; a different
    number of calls raises :class:`RuntimeError`.
    """

    def __init__(self, lm: LoadedModel):
        self.modules = list(encoder_layers(lm.model))[:-1]
        self.records: list[list] = [[] for _ in self.modules]

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        def hook_of(j: int):
            return lambda module, args, output: self.records[j].append(output)

        with module_hooks(forward=[(module, hook_of(j)) for j, module in enumerate(self.modules)]):
            yield

    def nbytes(self) -> int:
        def size(x) -> int:
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            if isinstance(x, (tuple, list)):
                return sum(size(y) for y in x)
            return 0
        return sum(size(r) for rec in self.records for r in rec)

    @contextlib.contextmanager
    def replaying(self, start_layer: int) -> Iterator[None]:
        """Layers ``< start_layer`` return their recorded outputs."""
        counters = [0] * start_layer
        patched = []
        try:
            for j in range(start_layer):
                module = self.modules[j]

                def replay(*args, j=j, **kwargs):
                    k = counters[j]
                    counters[j] += 1
                    if k >= len(self.records[j]):
                        raise RuntimeError("layer replay: the objective called the model more often than "
                                           "when it was recorded")
                    return self.records[j][k]

                module.forward = replay
                patched.append(module)
            yield
            if any(c != len(self.records[j]) for j, c in enumerate(counters)):
                raise RuntimeError("layer replay: the objective called the model a different number of times "
                                   "than when it was recorded")
        finally:
            for module in patched:
                del module.forward


def ablation_importance(objective: Objective, heads: Iterable[Head] | None = None, *,
                        reuse_lower_layers: bool = True, max_cache_bytes: int = 1 << 30,
                        progress: bool = False) -> AblationImportance:
    """Mask each head of ``heads`` (default: all) alone and evaluate
    ``objective``: ``1 + len(heads)`` evaluations of the whole corpus
    (Michel et al. 2019 section 3.1).

    ``reuse_lower_layers``: record every layer's output in the baseline pass
    and, when a head of layer ``l`` is masked, recompute only layers ``l ..``
    (bit-identical results; for 6 layers about 40 % less work), unless the
    recording exceeds ``max_cache_bytes`` (then it is dropped and every
    evaluation runs the whole model; never for an architecture whose layers
    share one module, ALBERT, where a layer cannot be replayed alone). Raises
    :class:`ValueError` for a head out of range.
    """
    from tqdm import tqdm

    lm = objective.lm
    heads = all_heads(lm) if heads is None else list(heads)
    _check_heads(lm, heads)
    replay = _LayerReplay(lm) if reuse_lower_layers and not lm.arch.shared_layers else None
    if replay is not None:
        with torch.no_grad(), replay.recording():
            baseline = objective.evaluate()
        if replay.nbytes() > max_cache_bytes:
            log.info("head ablation: layer outputs take %.0f MB, over the cap; not reusing them",
                     replay.nbytes() / 2**20)
            replay = None
    else:
        baseline = objective.evaluate()
    if baseline.loss is None:
        raise ValueError(f"ablation importance: the {objective.name} objective gives no per-pair loss")
    shape = (lm.layers, lm.heads)
    effect, loss_change, change, metric = (np.full(shape, np.nan) for _ in range(4))
    masked_per_pair = np.full((*shape, objective.n_pairs), np.nan)
    masked_loss = np.full((*shape, objective.n_pairs), np.nan)
    for layer, head in tqdm(heads, desc="head ablation", unit="head", disable=not progress, leave=False):
        reuse = replay.replaying(layer) if replay is not None else contextlib.nullcontext()
        with mask_heads(lm, [(layer, head)]), reuse:
            masked = objective.evaluate()
        delta = masked.loss - baseline.loss
        effect[layer, head] = float(np.mean(np.abs(delta)))
        loss_change[layer, head] = float(np.mean(delta))
        change[layer, head] = float(masked.metric - baseline.metric)
        metric[layer, head] = masked.metric
        masked_per_pair[layer, head] = masked.per_pair
        masked_loss[layer, head] = masked.loss
    return AblationImportance(baseline=baseline, effect=effect, loss_change=loss_change, metric_change=change,
                              metric=metric, masked_per_pair=masked_per_pair, masked_loss=masked_loss)


# ------------------------------------------------------------------ bootstrap

@dataclass(frozen=True)
class AblationIntervals:
    """Percentile bootstrap intervals of the ablation effects (Efron &
    Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13), resampling
    pairs with replacement.

    ``effect`` / ``loss_change`` / ``metric_change``: ``[layers, heads, 2]``
    float64, ``[low, high]`` of the interval of the same-named field of
    :class:`AblationImportance` (for a corpus metric such as Spearman's rho,
    the metric is recomputed on each resample, masked minus unmasked on the
    same resampled pairs). ``*_overlaps_zero``: ``[layers, heads]`` bool,
    ``low <= 0 <= high`` (no evidence of a non-zero effect at that level).
    ``level``: e.g. 0.95; ``resamples``; ``seed`` of
    ``numpy.random.default_rng``. NaN / False for heads not evaluated.
    """

    effect: np.ndarray
    loss_change: np.ndarray
    metric_change: np.ndarray
    effect_overlaps_zero: np.ndarray
    loss_change_overlaps_zero: np.ndarray
    metric_change_overlaps_zero: np.ndarray
    level: float
    resamples: int
    seed: int


def bootstrap_indices(n_pairs: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n_pairs]`` int: pair indices drawn with replacement by
    ``numpy.random.default_rng(seed).integers`` (the same draws for every
    head, so heads are compared on the same resamples)."""
    return np.random.default_rng(seed).integers(0, n_pairs, size=(resamples, n_pairs))


def _overlaps_zero(ci: np.ndarray) -> np.ndarray:
    return (ci[..., 0] <= 0) & (ci[..., 1] >= 0)


def bootstrap_ablation(ablation: AblationImportance, *, labels: np.ndarray | None = None, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> AblationIntervals:
    """Bootstrap intervals over pairs of every ablation effect.

    Args:
        ablation: from :func:`ablation_importance`.
        labels: ``[pairs]`` the labels the corpus metric uses (the
            similarity objective's ``labels`` for Spearman's rho), else None.
        resamples: number of bootstrap resamples (``B``).
        seed: seed of the resampling generator (fixed: the same intervals on
            every run).
        level: coverage of the percentile interval, in (0, 1).

    Returns:
        :class:`AblationIntervals`.

    Raises:
        ValueError: for ``resamples < 1`` or ``level`` outside (0, 1).
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs resamples >= 1 and 0 < level < 1, not {resamples} and {level}")
    base = ablation.baseline
    idx = bootstrap_indices(base.per_pair.shape[0], resamples, seed)  # [B, P]
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    base_metric = corpus_metric(base.metric_name, base.per_pair[idx], labels=None if labels is None else labels[idx],
                                tokens=None if base.tokens is None else base.tokens[idx])  # [B]
    shape = ablation.effect.shape
    cis = {name: np.full((*shape, 2), np.nan) for name in ("effect", "loss_change", "metric_change")}
    for layer, head in zip(*np.nonzero(~np.isnan(ablation.effect))):
        delta = ablation.masked_loss[layer, head] - base.loss  # [P]
        d = delta[idx]  # [B, P]
        cis["effect"][layer, head] = np.percentile(np.abs(d).mean(1), q)
        cis["loss_change"][layer, head] = np.percentile(d.mean(1), q)
        masked = corpus_metric(base.metric_name, ablation.masked_per_pair[layer, head][idx],
                               labels=None if labels is None else labels[idx],
                               tokens=None if base.tokens is None else base.tokens[idx])
        change = masked - base_metric
        cis["metric_change"][layer, head] = np.percentile(change[~np.isnan(change)], q) if np.any(
            ~np.isnan(change)) else np.nan
    return AblationIntervals(**cis, **{f"{k}_overlaps_zero": _overlaps_zero(v) for k, v in cis.items()},
                             level=level, resamples=resamples, seed=seed)


def importance_order(metric_change: np.ndarray, effect: np.ndarray, *, directed: bool,
                     higher_is_better: bool = True) -> list[Head]:
    """Heads ordered "whose masking hurts most" first: the one ordering the
    atlas uses (group masking's "5 heads that hurt most", the importance page).

    Args:
        metric_change: ``[layers, heads]`` signed change of the corpus metric
            when the head alone is masked (:attr:`AblationImportance.metric_change`).
        effect: ``[layers, heads]`` mean absolute per-pair loss change
            (:attr:`AblationImportance.effect`), the tie-breaker, and the
            ordering itself when the metric has no direction.
        directed: whether the metric has a better direction (Spearman's rho,
            PLL per token, accuracy); the mean similarity of unlabelled pairs
            has none (``metric_name == "mean_similarity"``).
        higher_is_better: the metric's direction when ``directed``.

    Returns:
        every head ``(layer, head)``: directed, by the metric's worsening
        (largest drop of a higher-is-better metric first), ties by larger
        ``effect``; undirected, by ``effect`` descending; then head order.
        Heads NaN in the sort key come last.

    Raises:
        ValueError: when the two arrays differ in shape.
    """
    m = np.asarray(metric_change, dtype=np.float64)
    e = np.asarray(effect, dtype=np.float64)
    if m.shape != e.shape or m.ndim != 2:
        raise ValueError(f"metric_change {m.shape} and effect {e.shape} must be the same [layers, heads] shape")
    worse = (-m if higher_is_better else m).reshape(-1)
    size = e.reshape(-1)
    flat = range(m.size)
    if directed:
        key = [(np.isnan(worse[k]), -np.nan_to_num(worse[k]), np.isnan(size[k]), -np.nan_to_num(size[k]), k)
               for k in flat]
    else:
        key = [(np.isnan(size[k]), -np.nan_to_num(size[k]), k) for k in flat]
    return [divmod(int(k[-1]), m.shape[1]) for k in sorted(key)]


# ------------------------------------------------------------------ gradients

@dataclass(frozen=True)
class GradientImportance:
    """Michel et al. (2019) head importance.

    ``raw``: ``[layers, heads]`` float64, ``I_h = E_x |dL(x)/dxi_h|`` at
    ``xi = 1`` (their eq. 3), the mean over the corpus's pairs of the absolute
    per-pair gradient, in units of the objective's loss per unit gate.
    ``normalized``: ``raw`` divided, layer by layer, by the L2 norm of that
    layer's row (their section 4.2, after Molchanov et al. 2017); a layer whose
    row is all 0 stays 0. It only orders heads *within* a layer: compare
    ``raw`` across layers and with the ablation effect. ``pairs``: how many
    pairs the mean is over.
    """

    raw: np.ndarray
    normalized: np.ndarray
    pairs: int


def gradient_importance(objective: Objective) -> GradientImportance:
    """One forward and one backward pass per batch of the objective.

    Each batch gets a gate ``[rows, layers, heads]`` of ones requiring grad
    (:func:`gate_heads`); ``torch.autograd.grad`` of the batch's summed loss
    gives per-row gradients (rows are independent), which are summed over
    each pair's rows to give that pair's ``dL/dxi``, then ``|.|`` is averaged
    over pairs. Only the gates' gradients are computed; no parameter ``.grad``
    is touched.
    """
    lm = objective.lm
    total = np.zeros((lm.layers, lm.heads), dtype=np.float64)
    pairs = 0
    for batch in objective.loss_batches():
        rows = len(batch.row_pair)
        gates = torch.ones(rows, lm.layers, lm.heads, device=lm.device, requires_grad=True)
        with torch.enable_grad():
            with gate_heads(lm, gates):
                loss = batch.forward()
            (grad,) = torch.autograd.grad(loss, gates)
        grad = grad.double().cpu().numpy()  # [R, L, H]
        ids, inverse = np.unique(batch.row_pair, return_inverse=True)
        per_pair = np.zeros((len(ids), lm.layers, lm.heads))
        np.add.at(per_pair, inverse.reshape(-1), grad)
        total += np.abs(per_pair).sum(0)
        pairs += len(ids)
    raw = total / max(pairs, 1)
    norm = np.linalg.norm(raw, axis=1, keepdims=True)
    normalized = np.divide(raw, norm, out=np.zeros_like(raw), where=norm > 0)
    return GradientImportance(raw=raw, normalized=normalized, pairs=pairs)


def rank_correlation(ablation_effect: np.ndarray, gradient: np.ndarray) -> float:
    """Spearman rank correlation over the heads between ablation and gradient
    importance measured on the same quantity: :attr:`AblationImportance.effect`
    (``mean_p |L'_p - L_p|``) and :attr:`GradientImportance.raw` (``E_p
    |dL_p/dxi|``, Michel et al. 2019 eq. 3, not layer-normalised: the layer
    norm only orders heads within a layer).

    Args:
        ablation_effect: ``[layers, heads]``.
        gradient: ``[layers, heads]``.

    Returns:
        rho over the heads not NaN in either; NaN for fewer than 2 heads or a
        constant array.

    Raises:
        ValueError: for shapes that differ.
    """
    a = np.asarray(ablation_effect, dtype=np.float64)
    g = np.asarray(gradient, dtype=np.float64)
    if a.shape != g.shape:
        raise ValueError(f"ablation {a.shape} and gradient {g.shape} importance must have the same shape")
    keep = ~(np.isnan(a) | np.isnan(g))
    return spearman(a[keep], g[keep])


# -------------------------------------------------------------- group masking

@dataclass(frozen=True)
class GroupMasking:
    """The effect of masking a group of heads together.

    ``heads``: the masked heads. ``baseline`` / ``masked``: the objective
    without / with the group masked; ``change``: :func:`metric_change`.
    ``movement``: ``[layers, heads]`` float64, for each remaining head the mean
    over pairs of the mean absolute change of its attention weights,
    ``mean_p mean_{i,j} |A'_p[i, j] - A_p[i, j]|`` (attention on ``[CLS] a
    [SEP] b [SEP]``, probability units); NaN for the masked heads. ``top``:
    the remaining head that moved most. ``pair_index``: the corpus index of the
    pair whose ``before`` / ``after`` attention ``[n, n]`` of ``top`` is given
    (rows = query), with its ``tokens``.
    """

    heads: list[Head]
    baseline: ObjectiveResult
    masked: ObjectiveResult
    change: float
    movement: np.ndarray
    top: Head
    pair_index: int
    tokens: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray


def group_masking(objective: Objective, encoded: list[EncodedPair], heads: Iterable[Head], *,
                  batch_size: int = 32, pair_index: int | None = None,
                  baseline: ObjectiveResult | None = None) -> GroupMasking:
    """Mask ``heads`` together; measure the objective and the attention shift.

    One group of :func:`group_masking_all` (see there); ``pair_index``: the
    pair whose before/after matrices are returned, default the pair on which
    the top head moved most.
    """
    return group_masking_all(objective, encoded, [heads], batch_size=batch_size, pair_index=pair_index,
                             baseline=baseline)[0]


def group_masking_all(objective: Objective, encoded: list[EncodedPair], groups: list[Iterable[Head]], *,
                      batch_size: int = 32, pair_index: int | None = None,
                      baseline: ObjectiveResult | None = None) -> list[GroupMasking]:
    """Mask each group of heads together; measure the objective and the
    attention shift of every other head.

    Args:
        objective: what masking is measured on.
        encoded: the pairs whose attention is compared, as
            :func:`generator.model.encode_pairs` gives them (``[CLS] a [SEP] b
            [SEP]``).
        groups: ``G`` groups of ``(layer, head)``.
        batch_size: pairs per attention pass.
        pair_index: the pair whose before/after matrices are returned for
            every group; default, per group, the pair on which its top head
            moved most.
        baseline: ``objective.evaluate()`` without masking, when the caller
            already has it.

    Returns:
        One :class:`GroupMasking` per group. Cost: one evaluation of the
        objective per group (plus the baseline when not given) and, per
        batch of ``encoded``, one attention pass unmasked (shared by the
        groups) and one per group; memory: one batch's attention per pass.

    Raises:
        ValueError: an empty group, a head out of range, a group holding every
            head, or a ``pair_index`` not among ``encoded``.
    """
    lm = objective.lm
    groups = [list(dict.fromkeys((int(l), int(h)) for l, h in heads)) for heads in groups]
    for heads in groups:
        if not heads:
            raise ValueError("group_masking needs at least one head")
        _check_heads(lm, heads)
        if len(heads) == lm.layers * lm.heads:
            raise ValueError("group_masking: every head is masked, none remains to compare")
    position = {e.index: k for k, e in enumerate(encoded)}
    if pair_index is not None and pair_index not in position:
        raise ValueError(f"pair_index {pair_index} is not among the encoded pairs")
    baseline = baseline if baseline is not None else objective.evaluate()
    masked_results = []
    for heads in groups:
        with mask_heads(lm, heads):
            masked_results.append(objective.evaluate())
    moved = np.zeros((len(groups), len(encoded), lm.layers, lm.heads))
    for batch in length_sorted_batches(encoded, batch_size):
        before = attention_for(lm, batch)
        for g, heads in enumerate(groups):
            with mask_heads(lm, heads):
                after = attention_for(lm, batch)
            for e, b, a in zip(batch, before, after):
                moved[g, position[e.index]] = np.abs(a.astype(np.float64) - b).mean(axis=(-2, -1))
    out = []
    for g, heads in enumerate(groups):
        movement = moved[g].mean(0)
        for layer, head in heads:
            movement[layer, head] = np.nan
        flat = int(np.nanargmax(movement))
        top = (flat // lm.heads, flat % lm.heads)
        shown = pair_index if pair_index is not None else encoded[int(np.argmax(moved[g, :, top[0], top[1]]))].index
        e = encoded[position[shown]]
        before_m = attention_for(lm, [e])[0][top[0], top[1]]
        with mask_heads(lm, heads):
            after_m = attention_for(lm, [e])[0][top[0], top[1]]
        masked = masked_results[g]
        out.append(GroupMasking(heads=heads, baseline=baseline, masked=masked, change=metric_change(baseline, masked),
                                movement=movement, top=top, pair_index=int(shown), tokens=e.layout.tokens,
                                before=before_m, after=after_m))
    return out
