"""Perturbed masking (Wu et al. 2020, "Perturbed Masking: Parameter-free
Probing for Analyzing and Interpreting BERT", section 2.1, eq. 1), with
whole-word masking as in their released code.

For one tokenised pair and a layer's hidden states ``H(.)``, the impact of
word ``w_j`` on word ``w_i`` is

    ``f(w_i, w_j) = || H(x \\ {w_i})_i  -  H(x \\ {w_i, w_j})_i ||_2``

where ``x \\ S`` is ``x`` with *every WordPiece* of the words in ``S``
replaced by the mask token (same length, same token types, no padding), and
``H(.)_i`` is the mean of ``H`` over the pieces of ``w_i``. Masking only one
piece would leak the word through its other pieces (``straw`` hidden while
``##berries`` stays visible). ``f(w_i, w_i) = 0``.

Wu et al. read ``H(x \\ {w_i})_i`` as "``w_i`` inferred from its context",
which needs a model trained to fill the mask token (a masked-LM head):
:func:`masked_lm_head` says whether a checkpoint has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from generator.errors import AtlasError
from generator.model import EncodedPair, LoadedModel, base_model, resolve_model_path
from generator.patterns import PairLayout

#: why the impact matrix of a checkpoint without a masked-LM head is a weaker reading (shown on the pages)
NO_MLM_HEAD_NOTE = ("This checkpoint has no masked-LM head, so it was never trained to fill {token}: its "
                    "representation of a masked word is not 'the word inferred from its context' as Wu et al. "
                    "(2020) read it, and another stand-in token can change the impact matrix a lot.")

_MLM_ARCHITECTURES = ("ForMaskedLM", "ForPreTraining", "ForMaskedLMWithHead")
_MLM_WEIGHT_PREFIXES = ("cls.predictions.", "lm_head.", "generator_lm_head", "generator_predictions.")


def masked_lm_head(lm: LoadedModel) -> str | None:
    """Whether the checkpoint of ``lm`` has a trained masked-LM head, without
    downloading anything.

    Looks at ``config.architectures`` (e.g. ``BertForMaskedLM``,
    ``BertForPreTraining``) and, for a local folder, at the weight names of
    ``model.safetensors`` (or its index) for a masked-LM head
    (``cls.predictions.*``, ``lm_head.*``).

    Args:
        lm: a loaded model.

    Returns:
        a short text naming the evidence (``"config architectures:
        BertForMaskedLM"``), or None when there is no masked-LM head.
    """
    archs = list(getattr(lm.model.config, "architectures", None) or [])
    for a in archs:
        if a.endswith(_MLM_ARCHITECTURES):
            return f"config architectures: {a}"
    folder = Path(resolve_model_path(lm.name_or_path)).expanduser()
    names: list[str] = []
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    elif (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            names = list(f.keys())
    for name in names:
        if name.startswith(_MLM_WEIGHT_PREFIXES):
            return f"weights: {name}"
    return None


def word_units(layout: PairLayout) -> list[np.ndarray]:
    """The words of a pair as groups of token positions: every non-special
    token with the same ``(layout.segment, layout.word)`` belongs to one word
    (e.g. ``straw ##berries``). Returns a list of ``[pieces]`` int arrays in
    order of first position."""
    units: dict[tuple[int, int], list[int]] = {}
    for t in range(layout.n):
        if not layout.special[t]:
            units.setdefault((int(layout.segment[t]), int(layout.word[t])), []).append(t)
    return [np.array(v, dtype=np.int64) for v in units.values()]


def masked_inputs(ids: np.ndarray, units: list[np.ndarray], masked: tuple[int, ...], mask_id: int) -> np.ndarray:
    """``ids`` ``[n]`` with every piece of the words ``masked`` (indices into
    ``units``) replaced by ``mask_id``."""
    out = np.array(ids, copy=True)
    for u in masked:
        out[units[u]] = mask_id
    return out


def _layer_index(lm: LoadedModel, layer: int) -> int:
    if not -lm.layers <= layer < lm.layers:
        raise ValueError(f"layer {layer} is out of range for a model of {lm.layers} layers")
    return layer % lm.layers


def impact_matrix(lm: LoadedModel, pair: EncodedPair, *, layer: int = -1, batch_size: int = 128,
                  mask_token_id: int | None = None) -> np.ndarray:
    """Wu et al.'s whole-word impact matrix of ``pair`` at encoder layer ``layer``.

    Args:
        lm: the encoder.
        pair: from :func:`generator.model.encode_pairs`.
        layer: 0-based encoder layer whose *output* is ``H`` (negative counts
            from the end; default ``-1``, the last hidden state).
        batch_size: sequences per forward pass (all have the pair's length, so
            batching changes nothing but speed).
        mask_token_id: the token that replaces masked pieces; default the
            tokenizer's mask token.

    Returns:
        ``[n, n]`` float32 over tokens (row = the word being represented,
        column = the word whose masking moves it): every piece of word ``w_i``
        in the rows and of ``w_j`` in the columns holds ``f(w_i, w_j)``
        (Euclidean distance in that layer's hidden space); 0 within a word;
        NaN in the rows and columns of special tokens. ``m`` words need
        ``m**2`` forward passes.

    Raises:
        ValueError: for a layer out of range.
        AtlasError: when there is no mask token.
    """
    index = _layer_index(lm, layer)
    mask_id = lm.tokenizer.mask_token_id if mask_token_id is None else mask_token_id
    if mask_id is None:
        raise AtlasError(f"perturbed masking: the tokenizer of {lm.name_or_path!r} has no [MASK] token")
    n = len(pair.input_ids)
    units = word_units(pair.layout)
    out = np.full((n, n), np.nan, dtype=np.float32)
    m = len(units)
    if m == 0:
        return out
    # rows: (i,) masks word i; (i, j) masks words i and j. Read word i of each.
    rows: list[tuple[int, ...]] = [(i,) for i in range(m)] + [(i, j) for i in range(m) for j in range(m) if j != i]
    types = None if pair.token_type_ids is None else torch.as_tensor(pair.token_type_ids, dtype=torch.long)
    base = base_model(lm.model)
    reps: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = torch.as_tensor(np.stack([masked_inputs(pair.input_ids, units, r, mask_id) for r in chunk]))
            inputs = {"input_ids": batch.to(lm.device), "attention_mask": torch.ones_like(batch, device=lm.device)}
            if types is not None:
                inputs["token_type_ids"] = types.repeat(len(chunk), 1).to(lm.device)
            hidden = base(**inputs, output_hidden_states=True).hidden_states[index + 1].double().cpu()  # [R, n, D]
            reps.extend(hidden[r, units[row[0]]].mean(0) for r, row in enumerate(chunk))
    h = torch.stack(reps)  # [rows, D]
    words = np.zeros((m, m))
    if m > 1:
        pi = np.array([r[0] for r in rows[m:]])
        pj = np.array([r[1] for r in rows[m:]])
        words[pi, pj] = torch.linalg.vector_norm(h[pi] - h[m:], dim=-1).numpy()
    for i, ui in enumerate(units):
        for j, uj in enumerate(units):
            out[np.ix_(ui, uj)] = words[i, j]
    return out
