"""Integrated gradients of the similarity of one pair, token by token.

The function attributed (``f``)
    The input is the pair's token ids ``x = [CLS] a [SEP] b [SEP]`` (``n``
    tokens, as on the pair pages). ``f`` looks its tokens up in
    the input embeddings (``get_input_embeddings()``) *once*, giving ``E`` ``[n, D]``, then splits ``E``
    into the two sentences as the similarity objective sees them --
    ``[CLS] a [SEP]`` (positions ``0 .. len_a + 1``) and ``[CLS] b [SEP]``
    (position 0, then the ``b`` tokens and the final ``[SEP]``; the ``[CLS]``
    row of ``E`` is used by both) -- runs the encoder on each (``inputs_embeds``,
    token type 0, positions from 0, no padding), mean-pools each last hidden
    state and returns the cosine of the two embeddings. So ``f(x)`` equals the
    pair's value under :func:`generator.analysis.objective.similarity` (the
    same token ids reach the same encoder), and the attribution of a token is
    the credit for the similarity of its occurrence in the pair.

Integrated gradients (Sundararajan et al. 2017, eq. 1)
    ``IG_i = (E_i - E'_i) . int_0^1 df/dE_i (E' + t (E - E')) dt``,
    computed by captum's :class:`~captum.attr.LayerIntegratedGradients` on the
    ``word_embeddings`` layer (Gauss-Legendre quadrature, ``n_steps`` points)
    and summed over the embedding dimension ``D``. Baseline ``x'``: every
    token replaced by ``[PAD]`` except the special tokens ([CLS], [SEP]),
    which are kept, so their attribution is exactly 0; the baseline is run
    with the same all-ones attention mask (the captum BERT tutorial's choice).

Completeness (Sundararajan et al. 2017, proposition 1)
    ``sum_i IG_i = f(x) - f(x')`` up to the quadrature error; the result
    reports both sides and ``relative_error = |sum IG - (f(x) - f(x'))| /
    |f(x) - f(x')|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generator.config import Pair
from generator.errors import AtlasError
from generator.model import LoadedModel, base_model, effective_max_length


@dataclass(frozen=True)
class Attribution:
    """Integrated gradients of one pair's similarity.

    ``tokens``: ``[n]`` WordPiece tokens of ``[CLS] a [SEP] b [SEP]``;
    ``segment``: ``[n]`` int8, 0 = a, 1 = b, -1 = special;
    ``attributions``: ``[n]`` float64, summed over the embedding dimension,
    in units of cosine similarity. ``value`` = ``f(x)``, ``baseline_value`` =
    ``f(x')``, ``total`` = ``sum(attributions)``, ``delta`` = ``total -
    (value - baseline_value)`` (captum's convergence delta), ``relative_error``
    = ``|delta| / |value - baseline_value|`` (``inf`` when the difference is
    0 and ``delta`` is not). ``n_steps``: quadrature points.
    """

    tokens: tuple[str, ...]
    segment: np.ndarray
    attributions: np.ndarray
    value: float
    baseline_value: float
    total: float
    delta: float
    relative_error: float
    n_steps: int


def _split_indices(seq_ids: list[int | None], special: list[int]) -> tuple[list[int], list[int]]:
    """Positions of ``[CLS] a [SEP]`` and ``[CLS] b [SEP]`` inside the pair
    (works for BERT's single and RoBERTa's double separator)."""
    a = [i for i, s in enumerate(seq_ids) if s == 0 and not special[i]]
    b = [i for i, s in enumerate(seq_ids) if s == 1 and not special[i]]
    n = len(seq_ids)
    return [0, *a, a[-1] + 1], [0, *b, n - 1]


def similarity_function(lm: LoadedModel, idx_a: list[int], idx_b: list[int]):
    """``f(input_ids [S, n]) -> [S]``: cosine similarity of the mean-pooled
    embeddings of the sentences at ``idx_a`` and ``idx_b`` (see the module
    doc). ``word_embeddings`` is called exactly once per call, which is what
    :class:`LayerIntegratedGradients` hooks."""
    base = base_model(lm.model)
    words = base.get_input_embeddings()
    ia = torch.tensor(idx_a, device=lm.device)
    ib = torch.tensor(idx_b, device=lm.device)

    def f(input_ids: torch.Tensor) -> torch.Tensor:
        emb = words(input_ids)  # [S, n, D]
        ha = base(inputs_embeds=emb[:, ia]).last_hidden_state.mean(1)
        hb = base(inputs_embeds=emb[:, ib]).last_hidden_state.mean(1)
        return torch.nn.functional.cosine_similarity(ha, hb, dim=-1)

    return f


def integrated_gradients(lm: LoadedModel, pair: Pair, *, n_steps: int = 50, max_length: int = 128,
                         internal_batch_size: int | None = None) -> Attribution:
    """Integrated gradients of the similarity of ``pair`` (see the module doc).

    ``n_steps`` forward and backward passes of two sentences (in batches of
    ``internal_batch_size`` steps; default all at once). Raises
    :class:`AtlasError` when the pair is truncated by ``max_length`` (the
    sentences would no longer be those the objective embeds) or a sentence has
    no token.
    """
    from captum.attr import LayerIntegratedGradients

    tok = lm.tokenizer
    max_length = effective_max_length(lm, max_length)
    enc = tok(pair.a, pair.b, truncation=False, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    if len(ids) > max_length:
        raise AtlasError(f"attribution: pair {pair.id!r} has {len(ids)} tokens, over max_length {max_length}")
    special = list(enc["special_tokens_mask"])
    seq_ids = enc.sequence_ids()
    if not any(s == 0 for s in seq_ids) or not any(s == 1 for s in seq_ids):
        raise AtlasError(f"attribution: pair {pair.id!r}: a sentence has no token")
    idx_a, idx_b = _split_indices(seq_ids, special)
    f = similarity_function(lm, idx_a, idx_b)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    x = torch.tensor([ids], device=lm.device)
    baseline = torch.tensor([[t if sp else pad for t, sp in zip(ids, special)]], device=lm.device)
    base = base_model(lm.model)
    lig = LayerIntegratedGradients(f, base.get_input_embeddings())
    with torch.enable_grad():
        attr = lig.attribute(x, baselines=baseline, n_steps=n_steps, method="gausslegendre",
                             internal_batch_size=internal_batch_size)
    with torch.no_grad():
        value = float(f(x)[0])
        baseline_value = float(f(baseline)[0])
    attributions = attr[0].sum(-1).double().detach().cpu().numpy()
    total = float(attributions.sum())
    diff = value - baseline_value
    delta_v = total - diff
    rel = abs(delta_v) / abs(diff) if diff != 0 else (0.0 if delta_v == 0 else float("inf"))
    segment = np.array([-1 if sp else s for s, sp in zip(seq_ids, special)], dtype=np.int8)
    return Attribution(tokens=tuple(tok.convert_ids_to_tokens(ids)), segment=segment, attributions=attributions,
                       value=value, baseline_value=baseline_value, total=total, delta=delta_v,
                       relative_error=float(rel), n_steps=n_steps)
