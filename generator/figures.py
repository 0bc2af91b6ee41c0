"""Data -> Plotly figures, and figures -> the JSON the pages embed.

Arrays go into figures as numpy float32 so that Plotly writes them as typed
arrays (base64), and every figure uses an empty template, not Plotly's 6.5 KB
default. Token labels are HTML-escaped before they reach Plotly, whose text
renderer understands a little HTML.
"""

from __future__ import annotations

import html
import json

import numpy as np
import plotly.graph_objects as go

from generator.registry import LABEL_INFO, LABELS, PATTERNS

#: Label name -> colour and title, from :mod:`generator.registry`.
PATTERN_COLORS = {name: info.color for name, info in LABEL_INFO.items()}
PATTERN_TITLES = {name: info.title for name, info in LABEL_INFO.items()}

_EMPTY = go.layout.Template()
_FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=11)


def _layout(**kwargs) -> dict:
    base = dict(template=_EMPTY, font=_FONT, paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    base.update(kwargs)
    return base


def escape_tokens(tokens) -> list[str]:
    """Tokens as Plotly-safe text (``<``, ``>``, ``&`` and quotes escaped)."""
    return [html.escape(t, quote=True) for t in tokens]


def attention_heatmap(attention: np.ndarray, tokens: list[str], *, size: int | None = None, ticks: bool = True,
                      title: str | None = None, zmax: float = 1.0, colorscale: str = "Blues") -> go.Figure:
    """Heatmap of one head's attention on one pair.

    ``attention``: ``[n, n]``, rows = query ("from"), columns = key ("to").
    Integer axes labelled with the tokens (tokens repeat), fixed colour range
    0..1, square cells, query 0 at the top. Hover text ("from -> to: weight")
    is filled in the browser from the tokens (see ``atlas.js``).
    """
    n = attention.shape[0]
    if size is None:  # about 15 px a token, capped so that the figure fits the page's content column
        size = int(min(540, max(300, 15 * n)))
    axis = dict(tickmode="array", tickvals=list(range(n)), ticktext=escape_tokens(tokens) if ticks else None,
                showticklabels=ticks, showgrid=False, zeroline=False, ticks="", automargin=True,
                tickfont=dict(size=9 if n > 30 else 10))
    margin = 80 if ticks else 4
    fig = go.Figure(
        go.Heatmap(z=np.asarray(attention, dtype=np.float32), zmin=0.0, zmax=float(zmax), colorscale=colorscale,
                   showscale=ticks, hovertemplate="%{customdata}<extra></extra>" if ticks else None,
                   hoverinfo=None if ticks else "skip",
                   colorbar=dict(thickness=10, len=0.8, title=dict(text="weight", side="right")) if ticks else None),
        layout=_layout(
            width=size + (margin + 70 if ticks else 2 * margin), height=size + (margin + 30 if ticks else 2 * margin),
            margin=dict(l=margin, r=10 if ticks else margin, t=30 if title else margin // 2 + 2, b=margin if ticks else margin),
            xaxis=dict(axis, side="bottom", tickangle=-60, constrain="domain",
                       title=dict(text="key (attended to)", font=dict(size=10)) if ticks else None),
            yaxis=dict(axis, autorange="reversed", scaleanchor="x", scaleratio=1, constrain="domain",
                       title=dict(text="query (attending)", font=dict(size=10)) if ticks else None),
            title=dict(text=html.escape(title), font=dict(size=12)) if title else None,
        ),
    )
    return fig


def head_grid(labels: np.ndarray, scores: np.ndarray, *, pair_level: bool = False,
              hover_extra: list[list[str]] | None = None, marks: list[list[str]] | None = None) -> go.Figure:
    """Layers x heads grid coloured by label.

    ``labels``: ``[layers, heads]`` label names; ``scores``: ``[layers, heads,
    7]`` (NaN = undefined). Hover shows all seven scores; the page's script
    opens the head page on click.

    Args:
        hover_extra: optional ``[layers][heads]`` plain-text lines added to each
            cell's hover after the scores (escaped here; ``\n`` starts a new line),
            e.g. the head's attention budget and its description.
        marks: optional ``[layers][heads]`` short texts printed in italics after the
            label's letters in a cell (escaped here; empty = none), e.g. the leading
            budget category of a ``mixed`` head.
    """
    layers, heads = labels.shape
    index = {name: k for k, name in enumerate(LABELS)}
    z = np.array([[index[x] for x in row] for row in labels], dtype=np.float32)
    k = len(LABELS)
    colorscale = []
    for i, name in enumerate(LABELS):
        colorscale += [[i / k, PATTERN_COLORS[name]], [(i + 1) / k, PATTERN_COLORS[name]]]
    hover = []
    for layer in range(layers):
        row = []
        for head in range(heads):
            lines = [f"<b>layer {layer}, head {head}: {labels[layer, head]}</b>"]
            for p, name in enumerate(PATTERNS):
                v = scores[layer, head, p]
                lines.append(f"{name}: {'n/a' if np.isnan(v) else f'{v:.2f}'}")
            if hover_extra is not None and hover_extra[layer][head]:
                lines += [html.escape(x) for x in hover_extra[layer][head].split("\n")]
            row.append("<br>".join(lines))
        hover.append(row)
    text = [[LABEL_INFO[x].short for x in row] for row in labels]
    if marks is not None:
        text = [[t + (" <i>" + html.escape(marks[layer][head]) + "</i>" if marks[layer][head] else "")
                 for head, t in enumerate(row)] for layer, row in enumerate(text)]
    return go.Figure(
        go.Heatmap(z=z, zmin=-0.5, zmax=k - 0.5, colorscale=colorscale, showscale=False, xgap=2, ygap=2,
                   text=text, texttemplate="%{text}", textfont=dict(size=10), customdata=hover,
                   hovertemplate="%{customdata}<extra></extra>"),
        layout=_layout(
            height=60 + 38 * layers, margin=dict(l=60, r=10, t=10, b=40),
            xaxis=dict(title="head", tickmode="array", tickvals=list(range(heads)), showgrid=False, zeroline=False),
            yaxis=dict(title="layer", tickmode="array", tickvals=list(range(layers)), autorange="reversed",
                       showgrid=False, zeroline=False),
            hoverlabel=dict(align="left"),
        ),
    )


def scores_bar(scores: dict[str, float | None], thresholds: dict[str, float], label: str) -> go.Figure:
    """Bar chart of a head's seven scores with each threshold drawn as a tick."""
    values = [np.nan if scores[p] is None else scores[p] for p in PATTERNS]
    colors = [PATTERN_COLORS[p] if p == label else "#9aa5b1" for p in PATTERNS]
    return go.Figure(
        [
            go.Bar(x=list(PATTERNS), y=np.array(values, dtype=np.float32), marker_color=colors, name="score",
                   hovertemplate="%{x}: %{y:.3f}<extra></extra>"),
            go.Scatter(x=list(PATTERNS), y=np.array([thresholds[p] for p in PATTERNS], dtype=np.float32),
                       mode="markers", name="threshold", marker=dict(symbol="line-ew-open", size=34, color="#222", line=dict(width=3, color="#222")),
                       hovertemplate="threshold %{x}: %{y:.2f}<extra></extra>"),
        ],
        layout=_layout(height=280, width=560, margin=dict(l=40, r=10, t=10, b=70), yaxis=dict(range=[0, 1.02], title="score"),
                       showlegend=False, bargap=0.35),
    )


def label_counts(counts: dict[str, int]) -> go.Figure:
    """Bar chart: number of heads per label."""
    names = [x for x in LABELS]
    return go.Figure(
        go.Bar(x=names, y=[counts.get(x, 0) for x in names], marker_color=[PATTERN_COLORS[x] for x in names],
               hovertemplate="%{x}: %{y} heads<extra></extra>"),
        layout=_layout(height=260, margin=dict(l=40, r=10, t=10, b=70), yaxis=dict(title="heads")),
    )


def layer_counts(labels: np.ndarray) -> go.Figure:
    """Stacked bars: for each layer, how many heads got each label."""
    layers = labels.shape[0]
    bars = []
    for name in LABELS:
        y = [int(np.sum(labels[layer] == name)) for layer in range(layers)]
        if sum(y):
            bars.append(go.Bar(x=list(range(layers)), y=y, name=name, marker_color=PATTERN_COLORS[name],
                               hovertemplate=f"layer %{{x}}: %{{y}} {name}<extra></extra>"))
    return go.Figure(bars, layout=_layout(barmode="stack", height=280, margin=dict(l=40, r=10, t=10, b=40),
                                          xaxis=dict(title="layer", tickmode="linear", dtick=1), yaxis=dict(title="heads")))


def threshold_strip(head_scores: np.ndarray, thresholds: dict[str, float]) -> go.Figure:
    """Every head's corpus score for each pattern (one dot per head) with the
    thresholds: how the labels fall out of the numbers. ``head_scores``:
    ``[layers, heads, 7]``."""
    layers, heads = head_scores.shape[:2]
    names = [f"layer {layer}, head {head}" for layer in range(layers) for head in range(heads)]
    traces = []
    for p, name in enumerate(PATTERNS):
        y = head_scores[:, :, p].reshape(-1).astype(np.float32)
        x = np.full(y.shape, p, dtype=np.float32) + np.linspace(-0.25, 0.25, y.size, dtype=np.float32)
        traces.append(go.Scatter(x=x, y=y, mode="markers", name=name, text=names,
                                 marker=dict(size=5, color=PATTERN_COLORS[name], line=dict(width=0.5, color="#333")),
                                 hovertemplate="%{text}: %{y:.3f}<extra>" + name + "</extra>"))
        traces.append(go.Scatter(x=[p - 0.4, p + 0.4], y=[thresholds[name]] * 2, mode="lines", showlegend=False,
                                 line=dict(color="#222", width=2), hoverinfo="skip"))
    return go.Figure(traces, layout=_layout(
        height=340, margin=dict(l=40, r=10, t=10, b=60), showlegend=False,
        xaxis=dict(tickmode="array", tickvals=list(range(len(PATTERNS))), ticktext=list(PATTERNS), showgrid=False,
                   zeroline=False),
        yaxis=dict(range=[0, 1.02], title="head score (corpus mean)")))


def embed_json(fig: go.Figure, **extra) -> str:
    """The JSON a page embeds for one figure: ``{"figure": ..., **extra}``,
    ASCII only, with ``<``, ``>`` and ``&`` escaped so that it is inert
    inside ``<script type="application/json">``. Deterministic."""
    figure = json.loads(fig.to_json(validate=False))
    return json_for_script({"figure": figure, **extra})


def json_for_script(value) -> str:
    """JSON that is inert inside ``<script type="application/json">``: ASCII
    only, sorted keys, and ``<``, ``>``, ``&`` written as ``\\u003c`` etc."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def head_values(values: np.ndarray, *, title: str, signed: bool = True, fmt: str = ".3f") -> go.Figure:
    """Layers x heads heatmap of one number per head (``values``: ``[layers,
    heads]``), diverging around 0 when ``signed`` (blue up, orange down)."""
    layers, heads = values.shape
    v = np.asarray(values, dtype=np.float32)
    m = float(np.nanmax(np.abs(v))) or 1.0
    scale = [[0, "#d95f02"], [0.5, "#ffffff"], [1, "#1f5fa8"]] if signed else "Blues"
    return go.Figure(
        go.Heatmap(z=v, zmin=-m if signed else 0.0, zmax=m, colorscale=scale, xgap=2, ygap=2,
                   texttemplate="%{z:" + fmt + "}", textfont=dict(size=9),
                   hovertemplate="layer %{y}, head %{x}: %{z:" + fmt + "}<extra>" + html.escape(title) + "</extra>",
                   colorbar=dict(thickness=10)),
        layout=_layout(height=60 + 38 * layers, margin=dict(l=60, r=10, t=10, b=40),
                       xaxis=dict(title="head", tickmode="array", tickvals=list(range(heads)), showgrid=False, zeroline=False),
                       yaxis=dict(title="layer", tickmode="array", tickvals=list(range(layers)), autorange="reversed",
                                  showgrid=False, zeroline=False)))


def head_scatter(x: np.ndarray, y: np.ndarray, labels: np.ndarray, *, x_title: str, y_title: str,
                 equal_axes: bool = False) -> go.Figure:
    """One point per head at ``(x, y)`` (each ``[layers, heads]``), coloured
    by label, one trace per label (the page's script opens a head on click)."""
    layers, heads = labels.shape
    traces = []
    for name in LABELS:
        idx = [(l, h) for l in range(layers) for h in range(heads) if labels[l, h] == name]
        if not idx:
            continue
        traces.append(go.Scatter(
            x=np.array([x[l, h] for l, h in idx], dtype=np.float32), y=np.array([y[l, h] for l, h in idx], dtype=np.float32),
            mode="markers", name=name, text=[f"layer {l}, head {h}" for l, h in idx],
            marker=dict(size=9, color=PATTERN_COLORS[name], line=dict(width=0.6, color="#333")),
            hovertemplate="%{text}<extra>" + name + "</extra>"))
    yaxis = dict(title=y_title, zeroline=False)
    if equal_axes:
        yaxis.update(scaleanchor="x", scaleratio=1)
    return go.Figure(traces, layout=_layout(height=460, margin=dict(l=60, r=10, t=10, b=50),
                                            xaxis=dict(title=x_title, zeroline=False), yaxis=yaxis,
                                            legend=dict(orientation="h", y=-0.15)))


def scatter_links(labels: np.ndarray, link_of) -> list[list[str]]:
    """Per trace of :func:`head_scatter`, the page link of each point."""
    layers, heads = labels.shape
    return [[link_of(l, h) for l in range(layers) for h in range(heads) if labels[l, h] == name]
            for name in LABELS if any(labels[l, h] == name for l in range(layers) for h in range(heads))]


def budget_bars(shares: np.ndarray, rows: list[str], categories: list[tuple[str, str, str]], *,
                title: str | None = None, height: int | None = None) -> go.Figure:
    """Horizontal stacked bars: where attention goes, one bar per row.

    Args:
        shares: ``[rows, categories]`` shares in [0, 1]; each row sums to 1
            (an exact partition of the attention, see :mod:`generator.budget`).
        rows: the bar names, top to bottom (e.g. "raw", "value-weighted", or "head 3").
        categories: ``(name, title, colour)`` of each column of ``shares``.
        title: an optional figure title.
        height: pixels; default grows with the number of rows.
    Returns:
        a Plotly figure, one trace per category (the legend names them).
    """
    v = np.asarray(shares, dtype=np.float32)
    traces = [go.Bar(y=rows, x=v[:, k], name=cat_title, orientation="h", marker_color=colour,
                     hovertemplate="%{y}: " + html.escape(cat_title) + " %{x:.1%}<extra></extra>")
              for k, (_, cat_title, colour) in enumerate(categories)]
    # the legend sits under the axis title, in a bottom margin tall enough for four rows of entries
    top, bottom = (30 if title else 10), 150
    height = height or bottom + top + 30 * len(rows) + 20
    plot = max(height - top - bottom, 20)
    return go.Figure(traces, layout=_layout(
        barmode="stack", height=height, margin=dict(l=110, r=10, t=top, b=bottom),
        xaxis=dict(title=dict(text="share of attention", standoff=4), range=[0, 1], tickformat=".0%"),
        yaxis=dict(autorange="reversed", type="category"),
        legend=dict(orientation="h", yanchor="top", y=-56 / plot, x=0, traceorder="normal", font=dict(size=10)),
        title=dict(text=html.escape(title), font=dict(size=12)) if title else None))


def rollout_heatmap(rollout: np.ndarray, tokens: list[str], size: int | None = None) -> go.Figure:
    """Attention rollout of one pair with a layer slider.

    Args:
        rollout: ``[layers, n, n]``; row i of layer l is how much of each input
            token (column) reaches position i after layers 0..l (Abnar &
            Zuidema 2020, "Quantifying Attention Flow in Transformers", §3).
        tokens: the ``n`` token strings (escaped here).
        size: heatmap side in pixels (default about 15 px a token).
    Returns:
        a heatmap of the last layer and a slider whose steps restyle ``z`` to each layer.
    """
    layers = rollout.shape[0]
    fig = attention_heatmap(rollout[-1], tokens, size=size, zmax=1.0)
    fig.update_traces(colorbar=dict(thickness=10, len=0.8, title=dict(text="share")))
    steps = [dict(method="restyle", label=str(layer), args=[{"z": [np.round(np.asarray(rollout[layer], dtype=np.float64), 3).tolist()]}])
             for layer in range(layers)]
    fig.update_layout(sliders=[dict(active=layers - 1, steps=steps, currentvalue=dict(prefix="up to layer "),
                                    pad=dict(t=60), len=0.9)],
                      height=fig.layout.height + 90)
    return fig


def _signed_groups(values: np.ndarray, ci: np.ndarray) -> list[tuple[str, list[tuple[int, int]]]]:
    """Heads of :func:`signed_intervals` split by their interval: ``"positive"``
    (low > 0), ``"negative"`` (high < 0), ``"overlaps"`` (low <= 0 <= high);
    each list sorted by value, ascending. Heads with a NaN value are left out."""
    layers, heads = values.shape
    groups: dict[str, list[tuple[int, int]]] = {"positive": [], "negative": [], "overlaps": []}
    for l in range(layers):
        for h in range(heads):
            if np.isnan(values[l, h]):
                continue
            low, high = ci[l, h]
            kind = "positive" if low > 0 else "negative" if high < 0 else "overlaps"
            groups[kind].append((l, h))
    return [(k, sorted(v, key=lambda lh: (float(values[lh]), lh))) for k, v in groups.items() if v]


def signed_intervals(values: np.ndarray, ci: np.ndarray, *, y_title: str, positive: tuple[str, str],
                     negative: tuple[str, str], overlaps: tuple[str, str] = ("interval overlaps 0", "#9aa5b1"),
                     level: float = 0.95) -> go.Figure:
    """A signed quantity per head with its interval: one point per head,
    sorted by value from left to right, with error bars from ``ci``, and a
    line at 0 (a "caterpillar" plot).

    Args:
        values: ``[layers, heads]`` signed values (e.g. the mean change of the
            per-pair loss when the head alone is masked; NaN: not evaluated).
        ci: ``[layers, heads, 2]`` ``[low, high]`` interval of each value (e.g.
            a percentile bootstrap, Efron & Tibshirani 1993, "An Introduction
            to the Bootstrap", ch. 13).
        y_title: the y axis title (the quantity and its units).
        positive / negative / overlaps: ``(legend name, colour)`` of the heads
            whose interval lies above 0, below 0, or contains 0.
        level: the intervals' coverage, for the hover text.

    Returns:
        a figure with one trace per group present, in the order positive,
        negative, overlaps (:func:`signed_interval_links` gives the click
        targets in the same order).
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(ci, dtype=np.float64)
    order = sorted(((float(v[l, h]), (l, h)) for l in range(v.shape[0]) for h in range(v.shape[1])
                    if not np.isnan(v[l, h])))
    categories = [f"{l}-{h}" for _, (l, h) in order]
    style = {"positive": positive, "negative": negative, "overlaps": overlaps}
    pct_level = f"{100 * level:g}%"
    traces = []
    for kind, members in _signed_groups(v, c):
        name, colour = style[kind]
        y = np.array([v[lh] for lh in members], dtype=np.float32)
        low = np.array([c[lh][0] for lh in members], dtype=np.float32)
        high = np.array([c[lh][1] for lh in members], dtype=np.float32)
        traces.append(go.Scatter(
            x=[f"{l}-{h}" for l, h in members], y=y, mode="markers", name=html.escape(name),
            marker=dict(size=7, color=colour, line=dict(width=0.5, color="#333")),
            error_y=dict(type="data", symmetric=False, array=high - y, arrayminus=y - low, color=colour,
                         thickness=1.2, width=0),
            text=[f"layer {l}, head {h}: {v[l, h]:+.4g} [{c[l, h][0]:+.4g}, {c[l, h][1]:+.4g}]"
                  for l, h in members],
            hovertemplate="%{text}<extra>" + pct_level + " interval</extra>"))
    return go.Figure(traces, layout=_layout(
        height=380, margin=dict(l=70, r=10, t=10, b=60),
        xaxis=dict(title="head (layer-head), sorted by value", type="category", categoryorder="array",
                   categoryarray=categories, showticklabels=False, showgrid=False),
        yaxis=dict(title=y_title, zeroline=True, zerolinecolor="#444", zerolinewidth=1),
        legend=dict(orientation="h", y=-0.12)))


def signed_interval_links(values: np.ndarray, ci: np.ndarray, link_of) -> list[list[str]]:
    """Per trace of :func:`signed_intervals`, the page link of each point
    (``link_of(layer, head)``)."""
    return [[link_of(l, h) for l, h in members]
            for _, members in _signed_groups(np.asarray(values, dtype=np.float64), np.asarray(ci, dtype=np.float64))]
