/* Attention Atlas interactive views: head view (lines), model view
 * (thumbnails of every head) and query/key view. Data comes from
 * <script type="application/json"> blocks; token text arrives HTML-escaped
 * for Plotly and reaches the DOM only through textContent (after decoding
 * the entities), never through innerHTML. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function floats(b64) { return new Float32Array(bytes(b64).buffer); }
  /* The tokens are HTML-escaped for Plotly; decode for textContent. */
  function plain(text) {
    var t = document.createElement("textarea");
    t.innerHTML = text;  // a detached <textarea> parses entities only, never markup
    return t.value;
  }
  function data(el) { return JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function fmt(x, d) { return (Math.round(x * Math.pow(10, d)) / Math.pow(10, d)).toFixed(d); }

  /* attention of (layer, head) as rows of floats in [0, 1] */
  function matrix(d, att, layer, head) {
    var n = d.n, base = (layer * d.heads + head) * n * n, rows = [];
    for (var i = 0; i < n; i++) {
      var row = [];
      for (var j = 0; j < n; j++) row.push(att[base + i * n + j] / 255);
      rows.push(row);
    }
    return rows;
  }

  var FILTERS = [["all", "All"], ["aa", "A\u2192A"], ["bb", "B\u2192B"], ["ab", "A\u2192B"], ["ba", "B\u2192A"]];
  function passes(filter, si, sj) {
    if (filter === "all") return true;
    return filter === ["a", "b"][si] + ["a", "b"][sj];
  }

  function blues(w) {  // white -> dark blue, as Plotly's "Blues"
    return [Math.round(255 - w * 247), Math.round(255 - w * 207), Math.round(255 - w * 148)];
  }

  /* ------------------------------------------------------------ head view */
  function headView(root) {
    var d = data(root), att = bytes(d.att), n = d.n;
    var tokens = d.tokens.map(plain);
    var state = { layer: d.start[0], head: d.start[1], filter: "all", pinned: null, hover: null, words: false };
    var controls = el("div", { "class": "atlas-hv-controls" });
    var layerSel = null, headSel = null;
    if (d.layers > 1 || d.heads > 1) {
      layerSel = el("select", { "class": "hv-layer", "aria-label": "layer" });
      for (var l = 0; l < d.layers; l++) layerSel.appendChild(el("option", { value: l }, "layer " + l));
      headSel = el("select", { "class": "hv-head", "aria-label": "head" });
      for (var h = 0; h < d.heads; h++) headSel.appendChild(el("option", { value: h }, "head " + h));
      layerSel.value = state.layer; headSel.value = state.head;
      controls.appendChild(layerSel); controls.appendChild(headSel);
    }
    var filterSel = el("select", { "class": "hv-filter", "aria-label": "sentences" });
    FILTERS.forEach(function (f) { filterSel.appendChild(el("option", { value: f[0] }, f[1])); });
    controls.appendChild(filterSel);
    var info = el("span", { "class": "hv-info atlas-muted" });
    controls.appendChild(info);
    root.appendChild(controls);

    var rowH = 18, width = 460, height = n * rowH + 10;
    var box = svg("svg", { "class": "hv-svg", width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           role: "img", "aria-label": "attention lines from query tokens (left) to key tokens (right)" });
    var gLines = svg("g", {}), left = [], right = [], weights = [], lines = [];
    box.appendChild(gLines);
    var xl = 150, xr = 310;
    for (var i = 0; i < n; i++) {
      var y = 14 + i * rowH;
      var lt = svg("text", { x: xl - 6, y: y, "text-anchor": "end", "class": "hv-tok hv-left side-" + d.sides[i], "data-i": i }, tokens[i]);
      var rt = svg("text", { x: xr + 6, y: y, "text-anchor": "start", "class": "hv-tok hv-right side-" + d.sides[i] }, tokens[i]);
      var wt = svg("text", { x: width - 4, y: y, "text-anchor": "end", "class": "hv-weight" }, "");
      box.appendChild(lt); box.appendChild(rt); box.appendChild(wt);
      left.push(lt); right.push(rt); weights.push(wt);
    }
    root.appendChild(box);

    var heat = null;
    if (d.layers > 1 || d.heads > 1) {
      var toggle = el("div", { "class": "atlas-hv-controls" });
      var tokBtn = el("button", { type: "button", "class": "hv-level active", "data-level": "tokens" }, "tokens");
      var wordBtn = el("button", { type: "button", "class": "hv-level", "data-level": "words" }, "words");
      toggle.appendChild(el("span", { "class": "atlas-muted" }, "Heatmap of the selected head: "));
      toggle.appendChild(tokBtn); toggle.appendChild(wordBtn);
      root.appendChild(toggle);
      heat = el("div", { "class": "hv-heatmap" });
      root.appendChild(heat);
      [tokBtn, wordBtn].forEach(function (b) {
        b.addEventListener("click", function () {
          state.words = b.getAttribute("data-level") === "words";
          tokBtn.classList.toggle("active", !state.words); wordBtn.classList.toggle("active", state.words);
          drawHeat();
        });
      });
    }

    function current() { return matrix(d, att, state.layer, state.head); }

    function drawLines() {
      while (gLines.firstChild) gLines.removeChild(gLines.firstChild);
      lines = [];
      var m = current();
      for (var i = 0; i < n; i++) {
        for (var j = 0; j < n; j++) {
          var w = m[i][j];
          if (w < 0.01) continue;
          var ln = svg("line", { x1: xl, y1: 10 + i * rowH, x2: xr, y2: 10 + j * rowH, "stroke-width": 2,
                                  "class": "hv-line", "data-i": i, "data-j": j, "stroke-opacity": fmt(w, 3) });
          gLines.appendChild(ln);
          lines.push([ln, i, j, w]);
        }
      }
      update();
    }

    function update() {
      var sel = state.hover !== null ? state.hover : state.pinned;
      var m = current(), shown = 0;
      lines.forEach(function (t) {
        var ok = passes(state.filter, d.sides[t[1]], d.sides[t[2]]) && (sel === null || t[1] === sel);
        t[0].style.display = ok ? "" : "none";
        if (ok) shown++;
      });
      for (var i = 0; i < n; i++) {
        left[i].classList.toggle("selected", i === sel);
        weights[i].textContent = sel === null ? "" : fmt(m[sel][i], 2);
      }
      root.setAttribute("data-visible-lines", shown);
      info.textContent = sel === null
        ? "Hover or click a token on the left to see only its attention."
        : "\u201c" + tokens[sel] + "\u201d (position " + sel + ") attends: weights on the right" +
          (state.pinned !== null ? " (click it again to release)" : "");
    }

    function drawHeat() {
      if (!heat) return;
      var m = current(), labels = tokens, z = m;
      if (state.words) {
        var g = d.groups, w = d.group_labels.length, count = new Array(w).fill(0);
        z = [];
        for (var a = 0; a < w; a++) z.push(new Array(w).fill(0));
        for (var i = 0; i < n; i++) count[g[i]]++;
        for (i = 0; i < n; i++) for (var j = 0; j < n; j++) z[g[i]][g[j]] += m[i][j] / count[g[i]];
        labels = d.group_labels.map(plain);
      }
      var k = labels.length, idx = [], hover = [];
      for (var p = 0; p < k; p++) idx.push(p);
      var esc = state.words ? d.group_labels : d.tokens;
      for (p = 0; p < k; p++) {
        var row = [];
        for (var q = 0; q < k; q++) row.push(p + " " + esc[p] + " \u2192 " + q + " " + esc[q]);
        hover.push(row);
      }
      var size = Math.min(700, Math.max(300, 15 * k));
      var axis = { tickmode: "array", tickvals: idx, ticktext: esc, showgrid: false, zeroline: false, ticks: "" };
      Plotly.react(heat, [{ type: "heatmap", z: z, zmin: 0, zmax: 1, colorscale: "Blues", customdata: hover,
                            hovertemplate: "%{customdata}: %{z:.3f}<extra></extra>", colorbar: { thickness: 10 } }],
        { width: size + 120, height: size + 100, margin: { l: 80, r: 10, t: 30, b: 80 },
          title: { text: "layer " + state.layer + ", head " + state.head + (state.words ? " (words)" : " (tokens)"), font: { size: 12 } },
          xaxis: Object.assign({ tickangle: -60, constrain: "domain" }, axis),
          yaxis: Object.assign({ autorange: "reversed", scaleanchor: "x", constrain: "domain" }, axis),
          paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" },
        { displaylogo: false });
      heat.setAttribute("data-level", state.words ? "words" : "tokens");
    }

    left.forEach(function (t, i) {
      t.addEventListener("mouseenter", function () { state.hover = i; update(); });
      t.addEventListener("mouseleave", function () { state.hover = null; update(); });
      t.addEventListener("click", function () { state.pinned = state.pinned === i ? null : i; state.hover = null; update(); });
    });
    filterSel.addEventListener("change", function () { state.filter = filterSel.value; update(); });
    if (layerSel) {
      var change = function () {
        state.layer = +layerSel.value; state.head = +headSel.value;
        drawLines(); drawHeat();
        root.dispatchEvent(new CustomEvent("atlas:head", { detail: { layer: state.layer, head: state.head } }));
      };
      layerSel.addEventListener("change", change);
      headSel.addEventListener("change", change);
      root.atlasSelect = function (layer, head) { layerSel.value = layer; headSel.value = head; change(); };
    }
    drawLines();
    drawHeat();
    root.setAttribute("data-rendered", "1");
  }

  /* ----------------------------------------------------------- model view */
  function modelView(root) {
    var d = data(root), att = bytes(d.att), n = d.n;
    var grid = el("div", { "class": "atlas-mv-grid" });
    grid.style.gridTemplateColumns = "auto repeat(" + d.heads + ", 1fr)";
    grid.appendChild(el("span", {}, ""));
    for (var h = 0; h < d.heads; h++) grid.appendChild(el("span", { "class": "mv-axis" }, "head " + h));
    for (var l = 0; l < d.layers; l++) {
      grid.appendChild(el("span", { "class": "mv-axis" }, "layer " + l));
      for (h = 0; h < d.heads; h++) {
        var label = d.labels[l][h];
        var cell = el("a", { "class": "mv-cell", href: d.links[l][h], title: "layer " + l + ", head " + h + ": " + label });
        var canvas = el("canvas", { width: n, height: n, "class": "mv-thumb" });
        var ctx = canvas.getContext("2d"), img = ctx.createImageData(n, n), base = (l * d.heads + h) * n * n;
        for (var p = 0; p < n * n; p++) {
          var c = blues(att[base + p] / 255);
          img.data[4 * p] = c[0]; img.data[4 * p + 1] = c[1]; img.data[4 * p + 2] = c[2]; img.data[4 * p + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        cell.appendChild(canvas);
        cell.appendChild(el("span", { "class": "label label-" + label }, label));
        grid.appendChild(cell);
      }
    }
    root.appendChild(grid);
    root.setAttribute("data-rendered", "1");
  }

  /* ------------------------------------------------------- query/key view */
  var DIVERGING = [[0, "#d95f02"], [0.5, "#ffffff"], [1, "#1f5fa8"]];  // negative orange, positive blue

  function qkView(root) {
    var d = data(root), n = d.n, dim = d.d, q = floats(d.q), k = floats(d.k), att = floats(d.att);
    var tokens = d.tokens.map(plain);
    var controls = el("div", { "class": "atlas-hv-controls" });
    controls.appendChild(el("span", { "class": "atlas-muted" }, "query token: "));
    var sel = el("select", { "class": "qk-query", "aria-label": "query token" });
    for (var i = 0; i < n; i++) sel.appendChild(el("option", { value: i }, i + ": " + tokens[i]));
    sel.value = d.start;
    controls.appendChild(sel);
    var check = el("span", { "class": "qk-check atlas-muted" });
    controls.appendChild(check);
    root.appendChild(controls);
    var vecDiv = el("div", { "class": "qk-vectors" }), dotDiv = el("div", { "class": "qk-dots" });
    root.appendChild(vecDiv); root.appendChild(dotDiv);
    var idx = [], dims = [];
    for (i = 0; i < n; i++) idx.push(i);
    for (i = 0; i < dim; i++) dims.push(i);

    function draw() {
      var s = +sel.value, qv = [], kz = [], prod = [], dot = [], scaled = [], soft = [], maxv = -Infinity;
      for (var t = 0; t < dim; t++) qv.push(q[s * dim + t]);
      for (var j = 0; j < n; j++) {
        var krow = [], prow = [], sum = 0;
        for (t = 0; t < dim; t++) {
          var kv = k[j * dim + t], pv = qv[t] * kv;
          krow.push(kv); prow.push(pv); sum += pv;
        }
        kz.push(krow); prod.push(prow); dot.push(sum); scaled.push(sum / Math.sqrt(dim));
        maxv = Math.max(maxv, sum / Math.sqrt(dim));
      }
      var total = 0;
      for (j = 0; j < n; j++) { soft.push(Math.exp(scaled[j] - maxv)); total += soft[j]; }
      var err = 0;
      for (j = 0; j < n; j++) { soft[j] /= total; err = Math.max(err, Math.abs(soft[j] - att[s * n + j])); }
      check.textContent = " softmax(q\u00b7k/\u221a" + dim + ") vs the model's attention: max difference " + err.toExponential(1);
      root.setAttribute("data-max-error", err);
      function absmax(rows) { var m = 1e-9; rows.forEach(function (r) { r.forEach(function (v) { m = Math.max(m, Math.abs(v)); }); }); return m; }
      var mq = absmax([qv].concat(kz)), mp = absmax(prod);
      var yaxis = { tickmode: "array", tickvals: idx, ticktext: d.tokens, autorange: "reversed", showgrid: false, zeroline: false };
      var hm = function (z, x, y, m, name) {
        return { type: "heatmap", z: z, xaxis: x, yaxis: y, zmin: -m, zmax: m, zmid: 0, colorscale: DIVERGING,
                 showscale: false, hovertemplate: name + " dim %{x}: %{z:.3f}<extra></extra>" };
      };
      var h = 40 + 16 * (n + 2);
      Plotly.react(vecDiv, [hm([qv], "x", "y", mq, "q"), hm(kz, "x2", "y2", mq, "k"), hm(prod, "x3", "y3", mp, "q\u00d7k")], {
        height: h + 90, margin: { l: 90, r: 10, t: 70, b: 10 },
        xaxis: { domain: [0, 0.3], side: "top", anchor: "y", title: { text: "query q of \u201c" + d.tokens[s] + "\u201d (" + dim + " dims)" }, showgrid: false },
        yaxis: { domain: [1 - 18 / h, 1], tickmode: "array", tickvals: [0], ticktext: ["q"], showgrid: false },
        xaxis2: { domain: [0.35, 0.65], side: "top", anchor: "y2", title: { text: "keys k (one row per token)" }, showgrid: false },
        yaxis2: Object.assign({ domain: [0, 1 - 40 / h], anchor: "x2" }, yaxis),
        xaxis3: { domain: [0.7, 1], side: "top", anchor: "y3", title: { text: "q \u00d7 k (element-wise)" }, showgrid: false },
        yaxis3: Object.assign({}, yaxis, { domain: [0, 1 - 40 / h], anchor: "x3", showticklabels: false }),
        annotations: [], paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { displaylogo: false });
      var bars = function (x, xa, color, name, f) {
        return { type: "bar", orientation: "h", x: x, y: idx, xaxis: xa, yaxis: "y", name: name,
                 marker: { color: x.map(function (v) { return v >= 0 ? color : "#d95f02"; }) },
                 hovertemplate: name + ": %{x:" + f + "}<extra></extra>" };
      };
      Plotly.react(dotDiv, [bars(dot, "x", "#1f5fa8", "q\u00b7k", ".2f"), bars(scaled, "x2", "#1f5fa8", "q\u00b7k/\u221ad", ".2f"),
                            bars(soft, "x3", "#3b7dd8", "softmax", ".3f")], {
        height: 40 + 16 * n + 60, margin: { l: 90, r: 10, t: 40, b: 40 }, showlegend: false,
        xaxis: { domain: [0, 0.3], title: { text: "q\u00b7k" } },
        xaxis2: { domain: [0.35, 0.65], title: { text: "q\u00b7k / \u221a" + dim } },
        xaxis3: { domain: [0.7, 1], title: { text: "softmax = attention" }, range: [0, 1] },
        yaxis: yaxis, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { displaylogo: false });
    }
    sel.addEventListener("change", draw);
    draw();
    root.setAttribute("data-rendered", "1");
  }

  window.AtlasViews = {
    init: function () {
      document.querySelectorAll(".atlas-headview").forEach(headView);
      document.querySelectorAll(".atlas-modelview").forEach(modelView);
      document.querySelectorAll(".atlas-qkview").forEach(qkView);
    }
  };
})();
