"""Where attention lives in each supported encoder: one table of
per-architecture facts, and the one capture mechanism that reads queries,
keys, values and attention weights out of every layer exactly as the model
computes them.

Two capture mechanisms, the least model-specific one that is exact:

* ``registry``: the model computes attention through transformers' attention
  function registry (``AttentionInterface`` / ``ALL_ATTENTION_FUNCTIONS``).
  The model is loaded with :data:`ATTENTION_IMPLEMENTATION`, a registered
  function that calls the model's own eager attention unchanged
  (``softmax(q k^T * scaling + mask) v``, the "scaled dot-product attention"
  of Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1) and hands
  the queries, keys (after any position transform the model applies before
  the call: ModernBERT's rotary embedding), values and weights of each call
  to the active capture. No model code is forked and no module name of the
  projections is needed. ModernBERT's local-attention layers also mask keys
  beyond a window; that mask is named as a term of its own.
* ``module``: DeBERTa-v2/v3 (disentangled attention, He et al. 2021,
  "DeBERTa: Decoding-enhanced BERT with Disentangled Attention", section 3.1)
  and MPNet (a relative-position bias, Song et al. 2020, "MPNet: Masked and
  Permuted Pre-training for Language Understanding", section 2.3, after Raffel
  et al. 2020, T5) compute attention inside their own self-attention modules.
  Forward hooks on those modules (asked for their attention probabilities)
  and on their query/key/value projections read the same quantities; the
  terms they add to the content logit ``q . k`` are computed with the model's
  own code and named (:attr:`Architecture.extra_terms`).

A layer is identified by call order: ALBERT (Lan et al. 2020, "ALBERT: A Lite
BERT for Self-supervised Learning of Language Representations", section 3.1)
shares one attention module across all its layers, so the k-th call of a
shared module within a forward pass is layer k, and each layer's attention is
still reported separately.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from generator.errors import AtlasError

#: The name under which :func:`atlas_eager_attention` is registered in
#: transformers' attention and attention-mask registries; models whose
#: architecture captures through the ``registry`` are loaded with it.
ATTENTION_IMPLEMENTATION = "atlas_eager"


@dataclass(frozen=True)
class ModuleCapture:
    """How to read an attention module that computes attention itself (no
    registry call): forward hooks on it, asked for its probabilities
    (``output_attentions=True``), and on its query/key/value projections.

    Attributes:
        terms: ``(module, query, key, arguments, compute)`` -> ``(scaling,
            extra)``: the factor on ``q . k`` and, when ``compute``, each
            logit term the module adds (name -> ``[B, heads, T, T]``),
            computed with the module's own code; ``arguments`` are the call's
            arguments by parameter name; ``query``/``key`` ``[B, heads, T, d]``.
        without_attentions: the module's output as it returns it when not
            asked for attentions (the hooks ask; the caller gets what it asked).
    """

    terms: Callable[[nn.Module, torch.Tensor, torch.Tensor, dict, bool], tuple[float, dict[str, torch.Tensor]]]
    without_attentions: Callable[[tuple], tuple]


@dataclass(frozen=True)
class Architecture:
    """The facts the atlas needs about one encoder architecture.

    Attributes:
        name: the architecture's name, for messages and the README table.
        model_types: the ``config.model_type`` values it covers.
        paper: who introduced it (author, year, title).
        layer_blocks: base model -> the ``[layers]`` transformer blocks in the
            order they run (the same block repeated where layers share weights).
        attention: block -> the module whose call is one layer's attention
            (for ``registry`` capture the ``module`` argument of the attention
            function).
        projections: names of the query, key and value projections inside
            ``attention`` (``module`` capture reads them with hooks; for
            ``registry`` capture they are documentation only).
        output: block -> the attention output projection ``W_O`` (a
            ``Linear`` whose input is the concatenated head contexts
            ``[B, T, heads * head_dim]``): head masking, gates and value norms.
        capture: ``registry`` or ``module`` (see the module doc).
        module_capture: for ``module`` capture, how (:class:`ModuleCapture`).
        registry_terms: for ``registry`` capture, ``(config, layer, query)``
            -> name -> ``[B, heads, T, T]`` the terms of
            :attr:`extra_terms` for that layer (every name on every layer),
            or ``None`` when the logit is ``q . k * scaling`` alone.
        framing: the special tokens around a pair, as the tokenizer frames it.
        extra_terms: name -> what it is, for every term the architecture adds
            to the scaled content logit ``q . k * scaling`` (empty: the logit
            is ``q . k * scaling`` plus the padding mask).
        shared_layers: whether layers share one attention module (ALBERT), so
            per-layer module replacement (layer replay) cannot be used.
        position_offset: learned positions the model cannot give to tokens
            (RoBERTa-style positions start after the padding index: 2).
    """

    name: str
    model_types: tuple[str, ...]
    paper: str
    layer_blocks: Callable[[nn.Module], list[nn.Module]]
    attention: Callable[[nn.Module], nn.Module]
    projections: tuple[str, str, str]
    output: Callable[[nn.Module], nn.Linear]
    capture: Literal["registry", "module"]
    framing: str
    module_capture: ModuleCapture | None = None
    registry_terms: Callable[[object, int, torch.Tensor], dict[str, torch.Tensor]] | None = None
    extra_terms: dict[str, str] = field(default_factory=dict)
    shared_layers: bool = False
    position_offset: int = 0


def _encoder_layer(base: nn.Module) -> list[nn.Module]:
    return list(base.encoder.layer)


def _albert_layers(base: nn.Module) -> list[nn.Module]:
    config = base.config
    if getattr(config, "inner_group_num", 1) != 1:
        raise AtlasError(f"model.name_or_path: ALBERT with inner_group_num={config.inner_group_num} is not supported "
                         "(the atlas maps one attention call to one layer; released ALBERT checkpoints use 1)")
    groups = base.encoder.albert_layer_groups
    per_group = config.num_hidden_layers / config.num_hidden_groups
    return [groups[int(i / per_group)].albert_layers[0] for i in range(config.num_hidden_layers)]


def _deberta_terms(module: nn.Module, query: torch.Tensor, key: torch.Tensor, arguments: dict,
                   terms: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """DeBERTa-v2's scale and, when asked, its c2p and p2c logit terms, each
    computed by the module's own ``disentangled_attention_bias`` restricted to
    that one term (He et al. 2021, eq. 4; the scale ``1/sqrt(3 d)`` of their
    section 3.1 for both terms)."""
    pos_types = list(module.pos_att_type)
    scale_factor = 1 + sum(t in pos_types for t in ("c2p", "p2c"))
    scaling = (query.size(-1) * scale_factor) ** -0.5
    extra: dict[str, torch.Tensor] = {}
    if not (terms and module.relative_attention):
        return scaling, extra
    relative_pos, rel_embeddings = arguments.get("relative_pos"), arguments.get("rel_embeddings")
    B, H, T, d = query.shape
    q = query.reshape(B * H, T, d)
    k = key.reshape(B * H, T, d)
    try:
        for name in ("c2p", "p2c"):
            if name in pos_types:
                module.pos_att_type = [name]
                term = module.disentangled_attention_bias(q, k, relative_pos, module.pos_dropout(rel_embeddings),
                                                          scale_factor)
                extra[name] = term.view(B, H, T, T)
    finally:
        module.pos_att_type = pos_types
    return scaling, extra


def _mpnet_terms(module: nn.Module, query: torch.Tensor, key: torch.Tensor, arguments: dict,
                 terms: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """MPNet's scale ``1/sqrt(d)`` and, when asked, the relative-position bias
    its encoder computed once and passed to every layer (Song et al. 2020,
    section 2.3, after Raffel et al. 2020, T5)."""
    bias = arguments.get("position_bias")
    extra = {"position_bias": bias.expand(query.size(0), -1, -1, -1)} if terms and bias is not None else {}
    return query.size(-1) ** -0.5, extra


def _modernbert_terms(config, layer: int, query: torch.Tensor) -> dict[str, torch.Tensor]:
    """ModernBERT's local window as the additive term its eager mask adds:
    in a ``sliding_attention`` layer a key farther than
    ``config.sliding_window`` positions from the query gets the dtype's
    lowest value (no attention), else 0; 0 everywhere in a global layer
    (Warner et al. 2024, "Smarter, Better, Faster, Longer: A Modern
    Bidirectional Encoder", section 2.1.1)."""
    B, H, T, _ = query.shape
    term = torch.zeros(T, T, dtype=query.dtype, device=query.device)
    if config.layer_types[layer] == "sliding_attention":
        pos = torch.arange(T, device=query.device)
        far = (pos[:, None] - pos[None, :]).abs() > config.sliding_window
        term = term.masked_fill(far, torch.finfo(query.dtype).min)
    return {"local_window": term.expand(B, H, T, T)}


_BERT_LIKE = dict(layer_blocks=_encoder_layer, attention=lambda block: block.attention.self,
                  projections=("query", "key", "value"), output=lambda block: block.attention.output.dense,
                  capture="registry")

#: Every supported architecture, one row each.
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("BERT", ("bert",), 'Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers '
                 'for Language Understanding"', framing="[CLS] a [SEP] b [SEP]", **_BERT_LIKE),
    Architecture("RoBERTa", ("roberta", "camembert"), 'Liu et al. 2019, "RoBERTa: A Robustly Optimized BERT '
                 'Pretraining Approach"', framing="<s> a </s></s> b </s>", position_offset=2, **_BERT_LIKE),
    Architecture("XLM-RoBERTa", ("xlm-roberta",), 'Conneau et al. 2020, "Unsupervised Cross-lingual '
                 'Representation Learning at Scale"', framing="<s> a </s></s> b </s>", position_offset=2, **_BERT_LIKE),
    Architecture("ELECTRA", ("electra",), 'Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as '
                 'Discriminators Rather Than Generators"', framing="[CLS] a [SEP] b [SEP]", **_BERT_LIKE),
    Architecture("DistilBERT", ("distilbert",), 'Sanh et al. 2019, "DistilBERT, a distilled version of BERT"',
                 layer_blocks=lambda base: list(base.transformer.layer), attention=lambda block: block.attention,
                 projections=("q_lin", "k_lin", "v_lin"), output=lambda block: block.attention.out_lin,
                 capture="registry", framing="[CLS] a [SEP] b [SEP]"),
    Architecture("ALBERT", ("albert",), 'Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning of '
                 'Language Representations"', layer_blocks=_albert_layers, attention=lambda block: block.attention,
                 projections=("query", "key", "value"), output=lambda block: block.attention.dense,
                 capture="registry", framing="[CLS] a [SEP] b [SEP]", shared_layers=True),
    Architecture("DeBERTa-v2/v3", ("deberta-v2",), 'He et al. 2021, "DeBERTa: Decoding-enhanced BERT with '
                 'Disentangled Attention"', layer_blocks=_encoder_layer, attention=lambda block: block.attention.self,
                 projections=("query_proj", "key_proj", "value_proj"),
                 output=lambda block: block.attention.output.dense, capture="module",
                 framing="[CLS] a [SEP] b [SEP]",
                 module_capture=ModuleCapture(_deberta_terms, lambda output: (output[0], None)),
                 extra_terms={"c2p": "content-to-position: the query against the key's relative-position embedding "
                                     "(He et al. 2021, eq. 4, second term)",
                              "p2c": "position-to-content: the key against the query's relative-position embedding "
                                     "(He et al. 2021, eq. 4, third term)"}),
    Architecture("MPNet", ("mpnet",), 'Song et al. 2020, "MPNet: Masked and Permuted Pre-training for Language '
                 'Understanding"', layer_blocks=_encoder_layer, attention=lambda block: block.attention.attn,
                 projections=("q", "k", "v"), output=lambda block: block.attention.attn.o, capture="module",
                 framing="<s> a </s></s> b </s>", position_offset=2,
                 module_capture=ModuleCapture(_mpnet_terms, lambda output: output[:1]),
                 extra_terms={"position_bias": "a learned bias per head and bucketed relative distance, the same "
                                               "in every layer (Song et al. 2020, after Raffel et al. 2020, T5)"}),
    Architecture("ModernBERT", ("modernbert",), 'Warner et al. 2024, "Smarter, Better, Faster, Longer: A Modern '
                 'Bidirectional Encoder for Fast, Memory Efficient, and Long Context Finetuning and Inference"',
                 layer_blocks=lambda base: list(base.layers), attention=lambda block: block.attn,
                 projections=("Wqkv", "Wqkv", "Wqkv"), output=lambda block: block.attn.Wo, capture="registry",
                 framing="[CLS] a [SEP] b [SEP]", registry_terms=_modernbert_terms,
                 extra_terms={"local_window": "in the local-attention layers, keys farther than the half window "
                                              "(config.sliding_window) get no attention: the eager mask adds the "
                                              "dtype's lowest value to their logits (0 in the global layers); "
                                              "queries and keys are taken after the rotary embedding"}),
)

#: ``config.model_type`` -> its :class:`Architecture`.
BY_MODEL_TYPE: dict[str, Architecture] = {t: a for a in ARCHITECTURES for t in a.model_types}

#: Encoders with a known reason not to be supported; the refusal names it.
REFUSED: dict[str, str] = {
    "deberta": "DeBERTa v1 is not proven by a test (DeBERTa-v2/v3, model_type 'deberta-v2', is supported)",
    "nomic_bert": "its remote code has no `encoder.layer` of self-attention modules the atlas can read",
    "luke": "its attention mixes word and entity states; the hooked output is not word-to-word attention",
}


def supported_summary() -> str:
    """One line naming every supported architecture and its model types."""
    return "; ".join(f"{a.name} ({', '.join(a.model_types)})" for a in ARCHITECTURES)


def architecture_of(config, name_or_path: str) -> Architecture:
    """The :class:`Architecture` of a loaded config, or a refusal.

    Args:
        config: a transformers ``PretrainedConfig``.
        name_or_path: the config's ``model.name_or_path`` (for messages).

    Returns:
        The table row of ``config.model_type``.

    Raises:
        AtlasError: naming ``model.name_or_path``, the model type, why it is
            refused (decoder-only and encoder-decoder models attend causally or
            across two stacks, not the bidirectional self-attention over a
            pair the atlas scores) and what is supported.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    kind = getattr(config, "model_type", None)
    supported = f"supported: {supported_summary()}"
    if kind in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[kind]
    if getattr(config, "is_encoder_decoder", False):
        why = ("an encoder-decoder model: the atlas reads the bidirectional self-attention of one encoder over "
               "a sentence pair, not an encoder and a decoder with cross-attention")
    elif kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        why = ("a decoder-only model: its attention is causal (a token sees only the tokens before it), so the "
               "atlas's patterns over a pair (next token, the other sentence, [SEP]) do not apply")
    elif kind in REFUSED:
        why = f"an encoder the atlas does not support: {REFUSED[kind]}"
    else:
        why = "an encoder type the atlas has no table entry for (generator/architectures.py)"
    raise AtlasError(f"model.name_or_path: {name_or_path!r} is a {kind!r} model, {why}; {supported}")


# ------------------------------------------------------------------ capture

@dataclass
class LayerAttention:
    """What one layer's attention call computed, for every head.

    Attributes:
        layer: 0-indexed, from the embeddings up.
        weights: ``[B, heads, T, T]`` attention probabilities (rows = query,
            padding included), in the model's dtype.
        query: ``[B, heads, T, head_dim]`` the queries as they enter the
            logit (bias included, before the scale).
        key: ``[B, heads, T, head_dim]`` the keys.
        value: ``[B, heads, T, head_dim]`` the values (``x W_V + b_V``).
        scaling: the factor on ``q . k`` (``1/sqrt(head_dim)``; DeBERTa:
            ``1/sqrt(head_dim * (1 + number of position terms))``).
        extra: name -> ``[B, heads, T, T]`` each term the architecture adds to
            ``q . k * scaling`` (:attr:`Architecture.extra_terms`); filled only
            when the capture was asked for terms.
    """

    layer: int
    weights: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    scaling: float
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class _CallOrder:
    """Map a module's k-th call to its layer: ``module -> [layers]`` in run
    order (several layers for a shared module), counted modulo the list."""

    def __init__(self, modules: list[nn.Module]):
        self.layers: dict[int, list[int]] = {}
        for layer, module in enumerate(modules):
            self.layers.setdefault(id(module), []).append(layer)
        self.calls: dict[int, int] = {}

    def next(self, module: nn.Module) -> int | None:
        layers = self.layers.get(id(module))
        if layers is None:
            return None
        k = self.calls.get(id(module), 0)
        self.calls[id(module)] = k + 1
        return layers[k % len(layers)]


_ACTIVE: list[Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], None]] = []


def model_eager_attention(module: nn.Module) -> Callable:
    """The eager attention function of the modeling file that defines
    ``module``'s class (``eager_attention_forward`` of
    ``transformers.models.<model>.modeling_<model>``).

    Raises:
        AtlasError: when that file has none (the class computes attention
            itself: its architecture needs ``module`` capture).
    """
    fn = _EAGER.get(type(module))
    if fn is None:
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise AtlasError(f"{type(module).__name__} has no eager_attention_forward in {type(module).__module__}; "
                             "its attention cannot be captured through the attention-function registry")
        _EAGER[type(module)] = fn
    return fn


_EAGER: dict[type, Callable] = {}


def atlas_eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own eager attention (:func:`model_eager_attention`: the
    function transformers runs with ``attn_implementation="eager"``), called
    unchanged, handing its inputs and weights to the active capture
    (:func:`capture_attention`).

    Args:
        module: the calling attention module.
        query, key, value: ``[B, heads, T, head_dim]`` (queries and keys after
            any position transform the module applies before the call, such as
            rotary embeddings).
        attention_mask: the additive mask of the eager mask interface, or
            ``None`` (no padding).
        **kwargs: passed on (``scaling``, ``dropout``, ...).

    Returns:
        ``(output [B, T, heads, head_dim], weights [B, heads, T, T])``, exactly
        what the eager function returns.
    """
    output, weights = model_eager_attention(module)(module, query, key, value, attention_mask, **kwargs)
    scaling = kwargs.get("scaling")
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    for tap in _ACTIVE:
        tap(module, query, key, value, weights, scaling)
    return output, weights


def register_attention_function() -> None:
    """Register :func:`atlas_eager_attention` under
    :data:`ATTENTION_IMPLEMENTATION`, with the eager mask (an additive float
    mask), in transformers' registries; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, atlas_eager_attention)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def attention_implementation(arch: Architecture) -> str:
    """The ``attn_implementation`` to load a model of ``arch`` with:
    :data:`ATTENTION_IMPLEMENTATION` (registered here) for ``registry``
    capture, ``"eager"`` for ``module`` capture."""
    if arch.capture == "registry":
        register_attention_function()
        return ATTENTION_IMPLEMENTATION
    return "eager"


def prepare_model(model: nn.Module, arch: Architecture) -> None:
    """Make an already built model capturable: a ``registry`` architecture
    built with another ``attn_implementation`` (e.g. ``"eager"``) is switched
    to :data:`ATTENTION_IMPLEMENTATION` (transformers'
    ``set_attn_implementation``: the same weights, the same arithmetic as
    eager); a ``module`` architecture needs nothing."""
    if arch.capture == "registry" and getattr(model.config, "_attn_implementation", None) != ATTENTION_IMPLEMENTATION:
        register_attention_function()
        model.set_attn_implementation(ATTENTION_IMPLEMENTATION)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # [B, T, H*d] -> [B, H, T, d]
    B, T, _ = x.shape
    return x.view(B, T, heads, -1).transpose(1, 2)


@contextlib.contextmanager
def capture_attention(arch: Architecture, base: nn.Module, heads: int, on_layer: Callable[[LayerAttention], None],
                      terms: bool = False) -> Iterator[None]:
    """Hand every layer's attention to ``on_layer`` while the block runs.

    Args:
        arch: the model's architecture.
        base: the bare encoder (``base_model`` of a model with a task head).
        heads: attention heads per layer.
        on_layer: called once per layer and forward pass, in layer order, with
            its :class:`LayerAttention` (tensors alive only during the call:
            copy what you keep).
        terms: also compute the extra logit terms (DeBERTa's c2p / p2c,
            MPNet's position bias) with the model's own code.

    Every hook or registry tap is removed on exit, also after an exception.
    """
    blocks = arch.layer_blocks(base)
    modules = [arch.attention(b) for b in blocks]
    order = _CallOrder(modules)
    if arch.capture == "registry":
        if getattr(base.config, "_attn_implementation", None) != ATTENTION_IMPLEMENTATION:
            raise AtlasError(f"{arch.name}: the model was not loaded with attn_implementation="
                             f"{ATTENTION_IMPLEMENTATION!r} (use generator.model.load_model)")

        def tap(module, query, key, value, weights, scaling):
            layer = order.next(module)
            if layer is not None:
                extra = arch.registry_terms(base.config, layer, query) if terms and arch.registry_terms else {}
                on_layer(LayerAttention(layer, weights, query, key, value, float(scaling), extra))

        _ACTIVE.append(tap)
        try:
            yield
        finally:
            _ACTIVE.remove(tap)
        return

    qn, kn, vn = arch.projections
    seen: dict[int, dict] = {}
    handles = []

    def projection_hook(module_id: int, name: str):
        def hook(module, args, output):
            # the first call is the content projection; DeBERTa with shared keys calls the same
            # projections again on its relative-position embeddings
            seen.setdefault(module_id, {}).setdefault(name, output)
        return hook

    def pre_hook(module, args, kwargs):
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        state = seen[id(module)] = {"wanted": bool(bound.arguments.get("output_attentions", False))}
        bound.arguments["output_attentions"] = True
        state["arguments"] = dict(bound.arguments)
        return bound.args, bound.kwargs

    def post_hook(module, args, kwargs, output):
        state = seen.pop(id(module))
        layer = order.next(module)
        query, key, value = (_heads(state[n], heads) for n in (qn, kn, vn))
        scaling, extra = arch.module_capture.terms(module, query, key, state["arguments"], terms)
        if layer is not None:
            on_layer(LayerAttention(layer, output[1], query, key, value, float(scaling), extra))
        return output if state["wanted"] else arch.module_capture.without_attentions(output)

    try:
        for module in modules:
            if id(module) in {id(m) for m in modules[:modules.index(module)]}:
                continue
            for name in (qn, kn, vn):
                handles.append(getattr(module, name).register_forward_hook(projection_hook(id(module), name)))
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def output_projection_hooks(arch: Architecture, base: nn.Module,
                            transforms: dict[int, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Change the input of the attention output projection ``W_O`` of the
    given layers while the block runs: the concatenated head contexts
    ``[B, T, heads * head_dim]``, the place where head masking and gates act
    (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", eq. 2).

    Args:
        arch: the model's architecture.
        base: the bare encoder.
        transforms: layer -> function of the projection's input returning the
            new input (same shape). Layers not named are unchanged; for a
            projection shared by several layers (ALBERT) the k-th call is
            layer k.

    Hooks are removed on exit, also after an exception.
    """
    outputs = [arch.output(b) for b in arch.layer_blocks(base)]
    order = _CallOrder(outputs)

    def hook(module, args):
        layer = order.next(module)
        fn = transforms.get(layer)
        if fn is None:
            return None
        return (fn(args[0]), *args[1:])

    handles = []
    try:
        for module in {id(m): m for m in outputs}.values():
            handles.append(module.register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()
