"""Scalar objectives that head masking and gradients are measured against.

Three objectives, each computed per pair and summarised as one corpus metric,
in batches, through the model's ordinary forward pass, so that any forward
hook that is active (:func:`generator.analysis.importance.mask_heads`,
:func:`generator.analysis.importance.gate_heads`) acts on them:

``similarity`` (any encoder, the default model included)
    With ``input="separate"`` (the default, setting ``analysis.input``)
    sentences ``a`` and ``b`` are embedded *separately* as ``[CLS] s [SEP]``;
    the embedding is the mean of the last hidden state over the non-padding
    tokens ([CLS] and [SEP] included), i.e. sentence-transformers' mean
    pooling (Reimers & Gurevych 2019, "Sentence-BERT"), which is how
    all-MiniLM-L6-v2 is used. With ``input="joint"`` the pair is encoded once
    as ``[CLS] a [SEP] b [SEP]`` and each sentence is pooled over its own
    tokens (a cross-encoder style reading).
    Per-pair value: cosine similarity of the two embeddings, in [-1, 1].
    Corpus metric: the Spearman rank correlation between similarity and the
    pairs' ``label`` when every pair has a label and the labels are not all
    equal (the STS-benchmark convention); otherwise the mean similarity.
    Differentiable loss (gradient importance): with labels, the
    sentence-transformers ``CosineSimilarityLoss``, ``(cos - y')**2`` with
    ``y' = (y - min y) / (max y - min y)`` the labels scaled to [0, 1]; without
    labels the cosine itself (only ``|dL/dxi|`` is used, so the sign is moot).

``mlm`` (checkpoints with a masked-LM head, loaded with :func:`generator.model.load_model`)
    Pseudo-log-likelihood (Salazar et al. 2020, "Masked Language Model
    Scoring", eq. 2): ``PLL(W) = sum_t log P(w_t | W with w_t -> [MASK])``,
    masking the non-special tokens of ``[CLS] a [SEP] b [SEP]`` one at a time;
    natural log (nats). Per-pair value: the PLL (<= 0). Corpus metric: the
    PLL per scored token, ``sum PLL / sum tokens`` (higher is better;
    ``exp(-metric)`` is the pseudo-perplexity). ``max_positions`` caps the
    scored tokens per pair with a subset drawn by ``numpy.random.default_rng
    (seed)`` (fixed seed, so every evaluation scores the same tokens). Loss:
    ``-PLL``.

``classification`` (checkpoints with a sequence-classification head)
    Input ``[CLS] a [SEP] b [SEP]``; prediction = argmax of the logits.
    Per-pair value: 1.0 when the prediction equals the integer ``label``, else
    0.0. Corpus metric: accuracy. Loss: cross-entropy.

How a metric *changes* under masking is :func:`metric_change`; the corpus
metric of any (resampled) set of pairs is :func:`corpus_metric`. Every
result also carries each pair's own loss (:attr:`ObjectiveResult.loss`), the
quantity the gradients differentiate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from generator.config import Pair
from generator.errors import AtlasError
from generator.model import EncodedPair, LoadedModel, base_model, encode_pairs, pad_batch

log = logging.getLogger(__name__)

ObjectiveName = Literal["similarity", "mlm", "classification"]


# ----------------------------------------------------------------- results

@dataclass(frozen=True)
class ObjectiveResult:
    """One evaluation of an objective on a corpus.

    ``per_pair``: ``[pairs]`` float64 in corpus order (cosine similarity, PLL
    in nats, or 1.0/0.0 correct). ``metric``: the corpus metric (NaN when it is
    undefined, e.g. a Spearman correlation of a constant). ``metric_name``:
    ``"spearman"``, ``"mean_similarity"``, ``"pll_per_token"`` or
    ``"accuracy"``. ``predictions``: ``[pairs]`` predicted classes for
    ``classification``, else ``None``. ``tokens``: ``[pairs]`` number of scored
    tokens for ``mlm``, else ``None``. ``loss``: ``[pairs]`` float64, each
    pair's own loss ``L_p``, the quantity whose gradient
    :meth:`Objective.loss_batches` differentiates (``(cos - y')**2`` or ``cos``,
    ``-PLL``, cross-entropy), so that a change of ``loss`` under masking and
    Michel et al.'s ``|dL_p/dxi|`` measure the same thing.
    """

    objective: str
    metric_name: str
    metric: float
    per_pair: np.ndarray
    higher_is_better: bool = True
    predictions: np.ndarray | None = None
    tokens: np.ndarray | None = None
    loss: np.ndarray | None = None


def metric_change(base: ObjectiveResult, masked: ObjectiveResult) -> float:
    """How much an objective changed between ``base`` (no mask) and ``masked``.

    * ``mean_similarity`` (similarity without labels): the mean absolute change
      of the per-pair similarity, ``mean_p |cos'_p - cos_p|`` (>= 0, unsigned:
      without labels there is no better or worse direction);
    * every other metric: ``masked.metric - base.metric``, signed; negative
      means the masked heads helped the objective.

    Raises :class:`ValueError` when the two results are of different metrics
    or corpus sizes.
    """
    if base.metric_name != masked.metric_name or base.per_pair.shape != masked.per_pair.shape:
        raise ValueError(f"cannot compare {base.metric_name} over {base.per_pair.shape[0]} pairs with "
                         f"{masked.metric_name} over {masked.per_pair.shape[0]} pairs")
    if base.metric_name == "mean_similarity":
        return float(np.mean(np.abs(masked.per_pair - base.per_pair)))
    return float(masked.metric - base.metric)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two ``[k]`` arrays (average ranks for
    ties; ``scipy.stats.spearmanr``). NaN when ``k < 2`` or either is constant."""
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(spearmanr(x, y).statistic)


def corpus_metric(metric_name: str, per_pair: np.ndarray, *, labels: np.ndarray | None = None,
                  tokens: np.ndarray | None = None) -> np.ndarray | float:
    """The corpus metric ``metric_name`` of per-pair values, row by row.

    Args:
        metric_name: ``"spearman"`` (Spearman's rho of ``per_pair`` with
            ``labels``, average ranks for ties, as :func:`spearman`),
            ``"mean_similarity"`` / ``"accuracy"`` (the mean), or
            ``"pll_per_token"`` (``sum per_pair / sum tokens``).
        per_pair: ``[pairs]`` or ``[rows, pairs]`` (e.g. bootstrap resamples).
        labels: same shape, needed for ``"spearman"``.
        tokens: same shape, needed for ``"pll_per_token"``.

    Returns:
        a float for 1-D input, else ``[rows]`` float64; NaN where the metric is
        undefined (a constant column for Spearman).

    Raises:
        ValueError: for an unknown metric or a missing ``labels`` / ``tokens``.
    """
    x = np.atleast_2d(np.asarray(per_pair, dtype=np.float64))
    if metric_name in ("mean_similarity", "accuracy"):
        out = x.mean(-1)
    elif metric_name == "pll_per_token":
        if tokens is None:
            raise ValueError("pll_per_token needs the scored token counts")
        out = x.sum(-1) / np.maximum(np.atleast_2d(tokens).sum(-1), 1)
    elif metric_name == "spearman":
        if labels is None:
            raise ValueError("a Spearman metric needs the labels")
        from scipy.stats import rankdata

        rx = rankdata(x, axis=-1)
        ry = rankdata(np.atleast_2d(np.asarray(labels, dtype=np.float64)), axis=-1)
        rx -= rx.mean(-1, keepdims=True)
        ry -= ry.mean(-1, keepdims=True)
        den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), np.nan)
    else:
        raise ValueError(f"unknown corpus metric {metric_name!r}")
    return float(out[0]) if np.ndim(per_pair) == 1 else out


# --------------------------------------------------------------- protocol

@dataclass
class LossBatch:
    """One batch for gradients: the model rows it runs and how they map to pairs.

    ``row_pair``: ``[R]`` int, the corpus index of the pair each of the ``R``
    model rows (sequences) belongs to (a similarity pair is two rows, an mlm
    pair one row per scored token). ``forward()``: runs the model on the rows
    (hooks active at call time apply) and returns a scalar tensor, the sum over
    the batch's pairs of their per-pair loss. Because rows never interact, the
    gradient of that sum with respect to a per-row gate, summed over a pair's
    rows, is the gradient of that pair's own loss.
    """

    row_pair: np.ndarray
    forward: Callable[[], torch.Tensor]


class Objective(Protocol):
    """What :mod:`generator.analysis.importance` needs of an objective."""

    name: str
    lm: LoadedModel
    n_pairs: int

    def evaluate(self) -> ObjectiveResult: ...

    def loss_batches(self) -> Iterator[LossBatch]: ...


# ------------------------------------------------------------- helpers

def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[R, T, D]`` over the tokens where
    ``attention_mask`` ``[R, T]`` is 1 -> ``[R, D]`` (sentence-transformers'
    mean pooling)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _last_hidden(lm: LoadedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return base_model(lm.model)(**inputs).last_hidden_state


def _all_labels(pairs: list[Pair]) -> np.ndarray | None:
    if pairs and all(p.label is not None for p in pairs):
        return np.array([float(p.label) for p in pairs], dtype=np.float64)
    return None


# -------------------------------------------------------------- similarity

class SimilarityObjective:
    """Cosine similarity of the two sentences' mean-pooled embeddings (see the
    module doc).

    ``lm``: any loaded encoder (its base model is used). ``pairs``: the
    corpus. ``input``:

    * ``"separate"`` (default; how a bi-encoder such as all-MiniLM-L6-v2 is
      used, Reimers & Gurevych 2019): each sentence is tokenised alone as
      ``[CLS] s [SEP]``, truncated to ``max_length`` tokens, and mean-pooled
      over all its tokens; batches hold ``batch_size`` pairs (``2 *
      batch_size`` rows: the ``a`` sentences, then the ``b`` sentences);
    * ``"joint"`` (a cross-encoder style reading, the input the attention pages
      show): the pair is tokenised once as ``[CLS] a [SEP] b [SEP]``
      (``max_length`` tokens, longest sentence cut first) and each sentence's
      embedding is the mean of the last hidden state over its *own* tokens
      (special tokens excluded); one row per pair.

    Pairs are sorted by length. Raises :class:`AtlasError` for an empty corpus
    or an unknown ``input``.
    """

    name = "similarity"

    def __init__(self, lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 32, max_length: int = 128,
                 input: Literal["separate", "joint"] = "separate"):
        if not pairs:
            raise AtlasError("similarity objective: the corpus has no pairs")
        if input not in ("separate", "joint"):
            raise AtlasError(f"similarity objective: analysis.input must be 'separate' or 'joint', not {input!r}")
        self.lm = lm
        self.n_pairs = len(pairs)
        self.input = input
        tok = lm.tokenizer
        if input == "separate":
            # each distinct sentence is tokenised (and, in evaluate, embedded) once
            sentences = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
            row_of = {s: r for r, s in enumerate(sentences)}
            self._sentence_ids = [list(x) for x in tok(sentences, truncation=True, max_length=max_length)["input_ids"]]
            self._row_a = np.array([row_of[p.a] for p in pairs], dtype=np.int64)
            self._row_b = np.array([row_of[p.b] for p in pairs], dtype=np.int64)
            self._a = [self._sentence_ids[r] for r in self._row_a]
            self._b = [self._sentence_ids[r] for r in self._row_b]
            length = [max(len(self._a[i]), len(self._b[i])) for i in range(len(pairs))]
            by_length = sorted(range(len(sentences)), key=lambda r: (len(self._sentence_ids[r]), r))
            rows = 2 * batch_size
            self._sentence_batches = [by_length[i:i + rows] for i in range(0, len(by_length), rows)]
        else:
            enc = tok([p.a for p in pairs], [p.b for p in pairs], truncation="longest_first", max_length=max_length,
                      return_special_tokens_mask=True)
            self._joint = [list(x) for x in enc["input_ids"]]
            tti = enc.get("token_type_ids")
            self._types = [list(x) for x in tti] if tti is not None else None
            self._side = []  # per pair: [n] 0 for a's tokens, 1 for b's, -1 for special tokens
            for index in range(len(pairs)):
                special = enc["special_tokens_mask"][index]
                side = [-1 if (s is None or sp) else s for s, sp in zip(enc.sequence_ids(index), special)]
                if 0 not in side or 1 not in side:
                    raise AtlasError(f"similarity objective: pair {index} (id {pairs[index].id!r}): a sentence has "
                                     "no token left in the joint input")
                self._side.append(side)
            length = [len(x) for x in self._joint]
        order = sorted(range(len(pairs)), key=lambda i: (length[i], i))
        self._batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        labels = _all_labels(pairs)
        if labels is not None and np.all(labels == labels[0]):
            log.warning("similarity objective: every pair has the same label %g; using the mean similarity "
                        "instead of the Spearman correlation", labels[0])
            labels = None
        self.labels = labels
        if labels is not None:
            self._target = (labels - labels.min()) / (labels.max() - labels.min())

    def _cosines(self, batch: list[int]) -> torch.Tensor:
        """``[len(batch)]`` cosine similarities of the batch's pairs (graph kept)."""
        k = len(batch)
        if self.input == "separate":
            seqs = [self._a[i] for i in batch] + [self._b[i] for i in batch]
            inputs = pad_batch(self.lm, seqs)
            emb = mean_pool(_last_hidden(self.lm, inputs), inputs["attention_mask"])
            return torch.nn.functional.cosine_similarity(emb[:k], emb[k:], dim=-1)
        types = [self._types[i] for i in batch] if self._types is not None else None
        inputs = pad_batch(self.lm, [self._joint[i] for i in batch], types)
        hidden = _last_hidden(self.lm, inputs)  # [k, T, D]
        side = torch.full(inputs["attention_mask"].shape, -1, dtype=torch.long)
        for r, i in enumerate(batch):
            side[r, :len(self._side[i])] = torch.tensor(self._side[i])
        side = side.to(hidden.device)
        emb_a = mean_pool(hidden, (side == 0).long())
        emb_b = mean_pool(hidden, (side == 1).long())
        return torch.nn.functional.cosine_similarity(emb_a, emb_b, dim=-1)

    def _separate_cosines(self) -> np.ndarray:
        """``[pairs]`` cosine similarities, input ``"separate"``: every distinct
        sentence is embedded once, in batches of ``2 * batch_size`` sentences
        of similar length (a corpus that pairs one query with many titles, or
        reuses sentences, pays for each sentence once), then each pair's two
        embeddings are compared. Equal to :meth:`_cosines` up to float
        rounding (only the padding of the batches differs)."""
        emb = None
        for rows in self._sentence_batches:
            inputs = pad_batch(self.lm, [self._sentence_ids[r] for r in rows])
            pooled = mean_pool(_last_hidden(self.lm, inputs), inputs["attention_mask"])
            if emb is None:
                emb = pooled.new_empty((len(self._sentence_ids), pooled.shape[-1]))
            emb[torch.as_tensor(rows, device=pooled.device)] = pooled
        a = emb[torch.as_tensor(self._row_a, device=emb.device)]
        b = emb[torch.as_tensor(self._row_b, device=emb.device)]
        return torch.nn.functional.cosine_similarity(a, b, dim=-1).double().cpu().numpy()

    def evaluate(self) -> ObjectiveResult:
        """Per-pair cosine similarity ``[pairs]`` and the corpus metric."""
        per_pair = np.empty(self.n_pairs, dtype=np.float64)
        with torch.no_grad():
            if self.input == "separate":
                per_pair[:] = self._separate_cosines()
            else:
                for batch in self._batches:
                    per_pair[batch] = self._cosines(batch).double().cpu().numpy()
        if self.labels is not None:
            return ObjectiveResult("similarity", "spearman", spearman(per_pair, self.labels), per_pair,
                                   loss=(per_pair - self._target) ** 2)
        return ObjectiveResult("similarity", "mean_similarity", float(per_pair.mean()), per_pair,
                               loss=per_pair.copy())

    def loss_batches(self) -> Iterator[LossBatch]:
        """Batches whose loss is the sum of ``(cos - y')**2`` (labels) or of
        ``cos`` (no labels) over their pairs; rows: the ``a``s then the ``b``s."""
        for batch in self._batches:
            def forward(batch=batch) -> torch.Tensor:
                cos = self._cosines(batch)
                if self.labels is None:
                    return cos.sum()
                target = torch.as_tensor(self._target[batch], dtype=cos.dtype, device=cos.device)
                return ((cos - target) ** 2).sum()
            rows = batch + batch if self.input == "separate" else batch
            yield LossBatch(row_pair=np.array(rows, dtype=np.int64), forward=forward)


def similarity(lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 32, max_length: int = 128) -> ObjectiveResult:
    """Evaluate the similarity objective once (see :class:`SimilarityObjective`)."""
    return SimilarityObjective(lm, pairs, batch_size=batch_size, max_length=max_length).evaluate()


# ---------------------------------------------------------------- masked LM

class _GatherPositions:
    """Forward pre-hook on the output-embedding (decoder) layer that keeps only
    one position per row, so that the vocabulary projection -- the costliest
    part of the masked-LM head -- runs on the masked tokens only. Valid because
    the head is position-wise and the decoder is its last operation (BERT's
    ``cls.predictions.decoder``, RoBERTa's ``lm_head.decoder``)."""

    def __init__(self, positions: torch.Tensor):
        self.positions = positions  # [R]

    def __call__(self, module, args):
        hidden = args[0]  # [R, T, D]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden[rows, self.positions].unsqueeze(1), *args[1:])


class MaskedLMObjective:
    """Pseudo-log-likelihood of each pair (see the module doc).

    ``lm``: a :class:`LoadedModel` whose ``.model`` has a masked-LM head (from
    :func:`generator.model.load_model` with ``task="mlm"``). Rows: one copy of the pair
    per scored token, that token replaced by ``[MASK]``; ``batch_size`` rows a
    batch. Raises :class:`AtlasError` when the model has no masked-LM head or
    the tokenizer no mask token.
    """

    name = "mlm"

    def __init__(self, lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 64, max_length: int = 128,
                 max_positions: int | None = None, seed: int = 0):
        if not pairs:
            raise AtlasError("mlm objective: the corpus has no pairs")
        if lm.tokenizer.mask_token_id is None:
            raise AtlasError(f"mlm objective: the tokenizer of {lm.name_or_path!r} has no mask token")
        if not hasattr(lm.model, "get_output_embeddings") or lm.model.get_output_embeddings() is None:
            raise AtlasError(f"mlm objective: {lm.name_or_path!r} is loaded without a masked-LM head; "
                             "load it with load_model(name, task='mlm')")
        self.lm = lm
        self.n_pairs = len(pairs)
        self.encoded: list[EncodedPair] = encode_pairs(lm, pairs, max_length, "mlm objective")
        rng = np.random.default_rng(seed)
        rows: list[tuple[int, int]] = []  # (pair, position)
        self.tokens = np.zeros(self.n_pairs, dtype=np.int64)
        for e in self.encoded:
            positions = np.flatnonzero(~e.layout.special)
            if max_positions is not None and positions.size > max_positions:
                positions = np.sort(rng.choice(positions, size=max_positions, replace=False))
            self.tokens[e.index] = positions.size
            rows.extend((e.index, int(t)) for t in positions)
        rows.sort(key=lambda r: (len(self.encoded[r[0]].input_ids), r[0], r[1]))
        self._batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]

    def _log_probs(self, rows: list[tuple[int, int]]) -> torch.Tensor:
        """``[R]`` log P(original token | its copy with that token masked)."""
        mask_id = self.lm.tokenizer.mask_token_id
        seqs, types, true, pos = [], [], [], []
        for p, t in rows:
            e = self.encoded[p]
            ids = e.input_ids.tolist()
            true.append(ids[t])
            ids[t] = mask_id
            seqs.append(ids)
            types.append(e.token_type_ids.tolist() if e.token_type_ids is not None else [0] * len(ids))
            pos.append(t)
        inputs = pad_batch(self.lm, seqs, types)
        positions = torch.tensor(pos, device=self.lm.device)
        handle = self.lm.model.get_output_embeddings().register_forward_pre_hook(_GatherPositions(positions))
        try:
            logits = self.lm.model(**inputs).logits[:, 0]  # [R, V]
        finally:
            handle.remove()
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp.gather(1, torch.tensor(true, device=self.lm.device).unsqueeze(1)).squeeze(1)

    def evaluate(self) -> ObjectiveResult:
        """Per-pair PLL ``[pairs]`` (nats) and the PLL per scored token."""
        per_pair = np.zeros(self.n_pairs, dtype=np.float64)
        with torch.no_grad():
            for rows in self._batches:
                lp = self._log_probs(rows).double().cpu().numpy()
                np.add.at(per_pair, [p for p, _ in rows], lp)
        metric = float(per_pair.sum() / max(int(self.tokens.sum()), 1))
        return ObjectiveResult("mlm", "pll_per_token", metric, per_pair, tokens=self.tokens.copy(), loss=-per_pair)

    def loss_batches(self) -> Iterator[LossBatch]:
        """Batches whose loss is ``-sum log P`` over their rows (so a pair's
        rows together give ``-PLL``)."""
        for rows in self._batches:
            yield LossBatch(row_pair=np.array([p for p, _ in rows], dtype=np.int64),
                            forward=lambda rows=rows: -self._log_probs(rows).sum())


def mlm(lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 64, max_length: int = 128,
        max_positions: int | None = None, seed: int = 0) -> ObjectiveResult:
    """Evaluate the pseudo-log-likelihood objective once (see :class:`MaskedLMObjective`)."""
    return MaskedLMObjective(lm, pairs, batch_size=batch_size, max_length=max_length,
                             max_positions=max_positions, seed=seed).evaluate()


# ------------------------------------------------------------ classification

class ClassificationObjective:
    """Accuracy of a sequence classifier on ``[CLS] a [SEP] b [SEP]``.

    ``lm``: a :class:`LoadedModel` whose ``.model`` is a sequence classifier
    (from :func:`generator.model.load_model` with ``task="classification"``). Raises
    :class:`AtlasError` naming the pair when a label is missing, not an
    integer, or not in ``[0, num_labels)``, and when the model has no
    classification head.
    """

    name = "classification"

    def __init__(self, lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 32, max_length: int = 128):
        if not pairs:
            raise AtlasError("classification objective: the corpus has no pairs")
        num_labels = int(getattr(lm.model.config, "num_labels", 0))
        if not type(lm.model).__name__.endswith("ForSequenceClassification"):
            raise AtlasError(f"classification objective: {lm.name_or_path!r} is loaded without a classification "
                             "head; load it with load_model(name, task='classification')")
        labels = []
        for index, p in enumerate(pairs):
            y = p.label
            if y is None or not float(y).is_integer() or not 0 <= int(y) < num_labels:
                raise AtlasError(f"classification objective: pair {index} (id {p.id!r}), field 'label': "
                                 f"{y!r} is not a class index in 0..{num_labels - 1}")
            labels.append(int(y))
        self.lm = lm
        self.n_pairs = len(pairs)
        self.labels = np.array(labels, dtype=np.int64)
        self.encoded = encode_pairs(lm, pairs, max_length, "classification objective")
        order = sorted(self.encoded, key=lambda e: (len(e.input_ids), e.index))
        self._batches = [[e.index for e in order[i:i + batch_size]] for i in range(0, len(order), batch_size)]

    def _logits(self, batch: list[int]) -> torch.Tensor:
        es = [self.encoded[i] for i in batch]
        types = [e.token_type_ids.tolist() if e.token_type_ids is not None else [0] * len(e.input_ids) for e in es]
        return self.lm.model(**pad_batch(self.lm, [e.input_ids.tolist() for e in es], types)).logits

    def evaluate(self) -> ObjectiveResult:
        """Per-pair correctness ``[pairs]`` (1.0/0.0), predictions, accuracy."""
        pred = np.zeros(self.n_pairs, dtype=np.int64)
        loss = np.zeros(self.n_pairs, dtype=np.float64)
        with torch.no_grad():
            for batch in self._batches:
                logits = self._logits(batch).float()
                pred[batch] = logits.argmax(-1).cpu().numpy()
                target = torch.as_tensor(self.labels[batch], device=logits.device)
                loss[batch] = torch.nn.functional.cross_entropy(logits, target, reduction="none").double().cpu().numpy()
        correct = (pred == self.labels).astype(np.float64)
        return ObjectiveResult("classification", "accuracy", float(correct.mean()), correct, predictions=pred,
                               loss=loss)

    def loss_batches(self) -> Iterator[LossBatch]:
        """Batches whose loss is the summed cross-entropy of their pairs."""
        for batch in self._batches:
            def forward(batch=batch) -> torch.Tensor:
                logits = self._logits(batch).float()
                target = torch.as_tensor(self.labels[batch], device=logits.device)
                return torch.nn.functional.cross_entropy(logits, target, reduction="sum")
            yield LossBatch(row_pair=np.array(batch, dtype=np.int64), forward=forward)


def classification(lm: LoadedModel, pairs: list[Pair], *, batch_size: int = 32,
                   max_length: int = 128) -> ObjectiveResult:
    """Evaluate the classification objective once (see :class:`ClassificationObjective`)."""
    return ClassificationObjective(lm, pairs, batch_size=batch_size, max_length=max_length).evaluate()


def make_objective(name: ObjectiveName, lm: LoadedModel, pairs: list[Pair], **options) -> Objective:
    """The objective called ``name`` bound to ``lm`` and ``pairs``;
    ``options`` go to its constructor (``batch_size``, ``max_length``, and for
    ``mlm`` ``max_positions`` and ``seed``). Raises :class:`AtlasError` for an
    unknown name and whatever the constructor raises."""
    classes = {"similarity": SimilarityObjective, "mlm": MaskedLMObjective, "classification": ClassificationObjective}
    if name not in classes:
        raise AtlasError(f"unknown objective {name!r}; choose one of {', '.join(classes)}")
    return classes[name](lm, pairs, **options)
