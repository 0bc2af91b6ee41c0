"""Perturbed masking (Wu et al. 2020, "Perturbed Masking: Parameter-free
Probing for Analyzing and Interpreting BERT", section 2.1, eq. 1).

For one tokenised pair ``x`` (``n`` tokens) and a layer's hidden states
``H(.)`` ``[n, D]``, the impact of token ``x_j`` on token ``x_i`` is

    ``f(x_i, x_j) = || H(x \\ {x_i})_i  -  H(x \\ {x_i, x_j})_i ||_2``

where ``x \\ S`` is ``x`` with the tokens at the positions ``S`` replaced by
``[MASK]`` (same length, same token types, no padding). ``f(x_i, x_i) = 0``.
The result reads like attention: row ``i`` = the token being represented,
column ``j`` = the token whose masking moves it; the matrix is not
symmetric. Units: Euclidean distance in the hidden space of that layer.
"""

from __future__ import annotations

import numpy as np
import torch

from generator.errors import AtlasError
from generator.model import EncodedPair, LoadedModel, base_model


def _layer_index(lm: LoadedModel, layer: int) -> int:
    if not -lm.layers <= layer < lm.layers:
        raise ValueError(f"layer {layer} is out of range for a model of {lm.layers} layers")
    return layer % lm.layers


def impact_matrix(lm: LoadedModel, pair: EncodedPair, *, layer: int = -1, batch_size: int = 128,
                  include_special: bool = False) -> np.ndarray:
    """Wu et al.'s impact matrix of ``pair`` at encoder layer ``layer``.

    ``layer``: 0-based encoder layer whose *output* is ``H`` (negative counts
    from the end; default ``-1``, the last hidden state). ``pair``: from
    :func:`generator.model.encode_pairs`. The tokens ``i, j`` range over the
    non-special tokens (``include_special=False``, the default: rows and
    columns of [CLS]/[SEP] are NaN) or over all ``n`` tokens. ``m`` positions
    need ``m + m (m - 1) = m**2`` forward passes of length ``n``, run
    ``batch_size`` at a time (all sequences have the same length, so batching
    changes nothing but speed).

    Returns ``[n, n]`` float32 with 0 on the diagonal (of the computed
    positions). Raises :class:`ValueError` for a layer out of range and
    :class:`AtlasError` when the tokenizer has no mask token.
    """
    index = _layer_index(lm, layer)
    mask_id = lm.tokenizer.mask_token_id
    if mask_id is None:
        raise AtlasError(f"perturbed masking: the tokenizer of {lm.name_or_path!r} has no [MASK] token")
    ids = torch.as_tensor(pair.input_ids, dtype=torch.long)
    n = ids.shape[0]
    positions = [i for i in range(n) if include_special or not pair.layout.special[i]]
    # rows: (i, -1) masks i only; (i, j) masks i and j. Read position i of each.
    if not positions:
        return np.full((n, n), np.nan, dtype=np.float32)
    rows = [(i, -1) for i in positions] + [(i, j) for i in positions for j in positions if j != i]
    types = None if pair.token_type_ids is None else torch.as_tensor(pair.token_type_ids, dtype=torch.long)
    base = base_model(lm.model)
    reps: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = ids.repeat(len(chunk), 1)
            for r, (i, j) in enumerate(chunk):
                batch[r, i] = mask_id
                if j >= 0:
                    batch[r, j] = mask_id
            inputs = {"input_ids": batch.to(lm.device),
                      "attention_mask": torch.ones_like(batch, device=lm.device)}
            if types is not None:
                inputs["token_type_ids"] = types.repeat(len(chunk), 1).to(lm.device)
            hidden = base(**inputs, output_hidden_states=True).hidden_states[index + 1]  # [R, n, D]
            at = torch.tensor([i for i, _ in chunk], device=hidden.device)
            reps.append(hidden[torch.arange(len(chunk), device=hidden.device), at].double().cpu())
    h = torch.cat(reps)  # [rows, D]
    m = len(positions)
    out = np.full((n, n), np.nan, dtype=np.float32)
    out[positions, positions] = 0.0
    if m > 1:
        pi = np.array([i for i, _ in rows[m:]])
        pj = np.array([j for _, j in rows[m:]])
        slot = {i: k for k, i in enumerate(positions)}
        single = h[[slot[i] for i in pi]]  # the i-only row of each (i, j) row
        out[pi, pj] = torch.linalg.vector_norm(single - h[m:], dim=-1).numpy().astype(np.float32)
    return out
