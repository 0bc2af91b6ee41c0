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

  /* White (0) to dark blue (1), as plotly.py's "Blues" and every heatmap of the atlas (plotly.js's
   * built-in "Blues" runs the other way). */
  var BLUES = [[0, "rgb(247,251,255)"], [0.125, "rgb(222,235,247)"], [0.25, "rgb(198,219,239)"],
               [0.375, "rgb(158,202,225)"], [0.5, "rgb(107,174,214)"], [0.625, "rgb(66,146,198)"],
               [0.75, "rgb(33,113,181)"], [0.875, "rgb(8,81,156)"], [1, "rgb(8,48,107)"]];
  function font() { return { color: window.Atlas ? window.Atlas.themeFont() : "#222" }; }
  function blues(w) {  // white -> dark blue, as BLUES
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
    var svgBtn = el("button", { type: "button", "class": "hv-save-svg", title: "Save the lines as an SVG file" }, "SVG");
    var numBtn = el("button", { type: "button", "class": "hv-save-json", title: "Save this head's attention as JSON" }, "numbers");
    controls.appendChild(svgBtn); controls.appendChild(numBtn);
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
      Plotly.react(heat, [{ type: "heatmap", z: z, zmin: 0, zmax: 1, colorscale: BLUES, customdata: hover,
                            hovertemplate: "%{customdata}: %{z:.3f}<extra></extra>",
                            colorbar: { thickness: 10, title: { text: "attention" } } }],
        { width: size + 150, height: size + 120, margin: { l: 100, r: 10, t: 30, b: 100 }, font: font(),
          title: { text: "layer " + state.layer + ", head " + state.head + (state.words ? " (words)" : " (tokens)"), font: { size: 12 } },
          xaxis: Object.assign({ tickangle: -60, constrain: "domain", title: { text: "key (attended to)" } }, axis),
          yaxis: Object.assign({ autorange: "reversed", scaleanchor: "x", constrain: "domain",
                                 title: { text: "query (attending)" } }, axis),
          paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" },
        { displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud"] });
      heat.setAttribute("data-level", state.words ? "words" : "tokens");
    }

    /* The view's state lives in the URL (#layer=3&head=7&token=5&filter=ab&level=words), so a
     * view can be shared and is restored on load. */
    function saveState() {
      var p = new URLSearchParams();
      if (layerSel) { p.set("layer", state.layer); p.set("head", state.head); }
      if (state.pinned !== null) p.set("token", state.pinned);
      if (state.filter !== "all") p.set("filter", state.filter);
      if (state.words) p.set("level", "words");
      history.replaceState(null, "", p.toString() ? "#" + p.toString() : location.pathname + location.search);
    }
    function announceToken() {
      if (state.pinned !== null) document.dispatchEvent(new CustomEvent("atlas:token", { detail: { i: state.pinned } }));
    }
    left.forEach(function (t, i) {
      t.addEventListener("mouseenter", function () { state.hover = i; update(); });
      t.addEventListener("mouseleave", function () { state.hover = null; update(); });
      t.addEventListener("click", function () {
        state.pinned = state.pinned === i ? null : i; state.hover = null; update(); saveState(); announceToken();
      });
    });
    filterSel.addEventListener("change", function () { state.filter = filterSel.value; update(); saveState(); });
    var change = null;
    if (layerSel) {
      change = function () {
        state.layer = +layerSel.value; state.head = +headSel.value;
        drawLines(); drawHeat(); saveState();
        root.dispatchEvent(new CustomEvent("atlas:head", { detail: { layer: state.layer, head: state.head } }));
      };
      layerSel.addEventListener("change", change);
      headSel.addEventListener("change", change);
      root.atlasSelect = function (layer, head) { layerSel.value = layer; headSel.value = head; change(); };
    }
    if (heat) {
      [].forEach.call(root.querySelectorAll("button.hv-level"), function (b) { b.addEventListener("click", saveState); });
    }
    svgBtn.addEventListener("click", function () {
      var copy = box.cloneNode(true), style = getComputedStyle(box);
      copy.setAttribute("xmlns", SVGNS);
      [].forEach.call(copy.querySelectorAll("text"), function (t) {
        t.setAttribute("fill", t.classList.contains("hv-weight") ? "#1f5fa8" : t.classList.contains("side-1") ? "#a05a00" : "#222");
        t.setAttribute("font-family", style.fontFamily); t.setAttribute("font-size", "12");
      });
      [].forEach.call(copy.querySelectorAll("line"), function (ln) { ln.setAttribute("stroke", "#1f5fa8"); });
      [].forEach.call(copy.querySelectorAll("[style]"), function (x) {
        if (x.style.display === "none") x.parentNode.removeChild(x);
      });
      window.Atlas.download("head-view-layer-" + state.layer + "-head-" + state.head + ".svg",
                            new XMLSerializer().serializeToString(copy), "image/svg+xml");
    });
    numBtn.addEventListener("click", function () {
      window.Atlas.download("attention-layer-" + state.layer + "-head-" + state.head + ".json",
                            JSON.stringify({ layer: state.layer, head: state.head, tokens: tokens,
                                             rows: "query (attending)", columns: "key (attended to)",
                                             attention: current() }), "application/json");
    });
    // restore a shared view
    var p = new URLSearchParams(location.hash.slice(1));
    if (layerSel && p.has("layer") && p.has("head") && +p.get("layer") < d.layers && +p.get("head") < d.heads) {
      layerSel.value = +p.get("layer"); headSel.value = +p.get("head");
      state.layer = +layerSel.value; state.head = +headSel.value;
    }
    if (p.has("filter") && FILTERS.some(function (f) { return f[0] === p.get("filter"); })) {
      state.filter = p.get("filter"); filterSel.value = state.filter;
    }
    if (p.has("token") && +p.get("token") < n) state.pinned = +p.get("token");
    if (heat && p.get("level") === "words") {
      state.words = true;
      [].forEach.call(root.querySelectorAll("button.hv-level"), function (b) {
        b.classList.toggle("active", b.getAttribute("data-level") === "words");
      });
    }
    drawLines();
    drawHeat();
    root.setAttribute("data-rendered", "1");
    if (state.pinned !== null) setTimeout(announceToken, 0);
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
        var cell = el("div", { "class": "mv-cell", "data-layer": l, "data-head": h,
                               title: "layer " + l + ", head " + h + ": " + label + " (click: show it in the head view)" });
        var canvas = el("canvas", { width: n, height: n, "class": "mv-thumb" });
        var ctx = canvas.getContext("2d"), img = ctx.createImageData(n, n), base = (l * d.heads + h) * n * n;
        for (var p = 0; p < n * n; p++) {
          var c = blues(att[base + p] / 255);
          img.data[4 * p] = c[0]; img.data[4 * p + 1] = c[1]; img.data[4 * p + 2] = c[2]; img.data[4 * p + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        cell.appendChild(canvas);
        cell.appendChild(el("a", { "class": "label label-" + label, href: d.links[l][h], title: "open the head's page" }, label));
        canvas.addEventListener("click", select.bind(null, l, h));
        grid.appendChild(cell);
      }
    }
    /* A thumbnail shows that head in the page's head view, on the same pair. */
    function select(layer, head) {
      var hv = document.querySelector(".atlas-headview");
      if (hv && !hv.getAttribute("data-rendered")) window.AtlasViews.render(hv);
      if (hv && hv.atlasSelect) {
        hv.atlasSelect(layer, head);
        hv.scrollIntoView({ behavior: "smooth", block: "start" });
      } else {
        window.location.href = d.links[layer][head];
      }
    }
    var save = el("button", { type: "button", "class": "mv-save-png", title: "Save all thumbnails as one PNG image" }, "PNG");
    save.addEventListener("click", function () {
      var cellPx = Math.max(48, n * 2), pad = 40, out = document.createElement("canvas");
      out.width = pad + d.heads * (cellPx + 6); out.height = pad + d.layers * (cellPx + 6);
      var c = out.getContext("2d");
      c.fillStyle = "#fff"; c.fillRect(0, 0, out.width, out.height);
      c.fillStyle = "#222"; c.font = "11px sans-serif"; c.imageSmoothingEnabled = false;
      var thumbs = grid.querySelectorAll("canvas.mv-thumb");
      for (var l = 0; l < d.layers; l++) {
        c.fillText("L" + l, 4, pad + l * (cellPx + 6) + cellPx / 2);
        for (var h = 0; h < d.heads; h++) {
          if (l === 0) c.fillText("H" + h, pad + h * (cellPx + 6) + cellPx / 3, 20);
          c.drawImage(thumbs[l * d.heads + h], pad + h * (cellPx + 6), pad + l * (cellPx + 6), cellPx, cellPx);
        }
      }
      out.toBlob(function (blob) {
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob); a.download = "model-view.png";
        document.body.appendChild(a); a.click(); a.remove();
      });
    });
    var bar = el("div", { "class": "atlas-hv-controls" });
    bar.appendChild(el("span", { "class": "atlas-muted" }, "Click a thumbnail to show that head in the head view below; click its label to open the head's page."));
    bar.appendChild(save);
    root.appendChild(bar);
    root.appendChild(grid);
    root.setAttribute("data-rendered", "1");
  }

  /* ------------------------------------------------------- query/key view */
  var DIVERGING = [[0, "#d95f02"], [0.5, "#ffffff"], [1, "#1f5fa8"]];  // negative orange, positive blue

  function qkView(root) {
    var d = data(root), n = d.n, dim = d.d, q = floats(d.q), k = floats(d.k), att = floats(d.att);
    var tokens = d.tokens.map(plain);
    // the logits are q.k * scale (1/sqrt(d), or the architecture's own) plus any terms it adds
    var scale = d.scale || 1 / Math.sqrt(dim), extra = d.extra ? floats(d.extra) : null;
    var scaleText = Math.abs(scale * Math.sqrt(dim) - 1) < 1e-9 ? "/\u221a" + dim : " \u00d7 " + scale.toPrecision(4);
    var logitText = "q\u00b7k" + scaleText + (extra ? " + terms" : "");
    var controls = el("div", { "class": "atlas-hv-controls" });
    controls.appendChild(el("span", { "class": "atlas-muted" }, "query token: "));
    var sel = el("select", { "class": "qk-query", "aria-label": "query token" });
    for (var i = 0; i < n; i++) sel.appendChild(el("option", { value: i }, i + ": " + tokens[i]));
    var shared = new URLSearchParams(location.hash.slice(1)).get("token");
    sel.value = shared !== null && +shared < n ? +shared : d.start;
    controls.appendChild(sel);
    var check = el("span", { "class": "qk-check atlas-muted" });
    controls.appendChild(check);
    root.appendChild(controls);
    if (d.terms && d.terms.length) {
      root.appendChild(el("p", { "class": "atlas-muted qk-terms" }, "This architecture adds logit terms to q\u00b7k" + scaleText +
        " that are not a product of q and k; the middle bars include them (size: row-centred root mean square, in logit units): " +
        d.terms.map(function (t) { return t[0] + " " + (+t[1]).toFixed(3); }).join(", ") + "."));
    }
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
        var logit = sum * scale + (extra ? extra[s * n + j] : 0);
        kz.push(krow); prod.push(prow); dot.push(sum); scaled.push(logit);
        maxv = Math.max(maxv, logit);
      }
      var total = 0;
      for (j = 0; j < n; j++) { soft.push(Math.exp(scaled[j] - maxv)); total += soft[j]; }
      var err = 0;
      for (j = 0; j < n; j++) { soft[j] /= total; err = Math.max(err, Math.abs(soft[j] - att[s * n + j])); }
      check.textContent = " softmax(" + logitText + ") vs the model's attention: max difference " + err.toExponential(1);
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
        annotations: [], font: font(), paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud"] });
      var bars = function (x, xa, color, name, f) {
        return { type: "bar", orientation: "h", x: x, y: idx, xaxis: xa, yaxis: "y", name: name,
                 marker: { color: x.map(function (v) { return v >= 0 ? color : "#d95f02"; }) },
                 hovertemplate: name + ": %{x:" + f + "}<extra></extra>" };
      };
      Plotly.react(dotDiv, [bars(dot, "x", "#1f5fa8", "q\u00b7k", ".2f"), bars(scaled.map(function (v) { return Math.max(v, -1e4); }), "x2", "#1f5fa8", logitText, ".2f"),
                            bars(soft, "x3", "#3b7dd8", "softmax", ".3f")], {
        height: 40 + 16 * n + 60, margin: { l: 90, r: 10, t: 40, b: 40 }, showlegend: false,
        xaxis: { domain: [0, 0.3], title: { text: "q\u00b7k" } },
        xaxis2: { domain: [0.35, 0.65], title: { text: logitText } },
        xaxis3: { domain: [0.7, 1], title: { text: "softmax = attention" }, range: [0, 1] },
        yaxis: yaxis, font: font(), paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"
      }, { displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud"] });
    }
    sel.addEventListener("change", draw);
    // a token clicked in the head view of the same pair becomes the query here
    document.addEventListener("atlas:token", function (ev) {
      if (ev.detail.i < n) { sel.value = ev.detail.i; draw(); }
    });
    draw();
    root.setAttribute("data-rendered", "1");
  }

  /* ------------------------------------------------------ heads side by side */
  function compareView(root) {
    var d = data(root), H = d.heads, total = d.layers * d.heads;
    var p = new URLSearchParams(location.hash.slice(1));
    var chosen = (p.get("h") || "").split(",").map(function (x) {
      var m = /^(\d+)-(\d+)$/.exec(x); return m && +m[1] < d.layers && +m[2] < H ? +m[1] * H + +m[2] : null;
    }).filter(function (k) { return k !== null; }).slice(0, 4);
    if (!chosen.length) chosen = [0, Math.min(1, total - 1)];
    var pairIx = Math.min(Math.max(0, +(p.get("pair") || 0)), d.pairs.length - 1);
    var controls = el("div", { "class": "atlas-hv-controls" });
    var sels = [];
    for (var s = 0; s < 4; s++) {
      var sel = el("select", { "class": "cmp-head", "aria-label": "head " + (s + 1) });
      sel.appendChild(el("option", { value: "" }, "(none)"));
      d.head_info.forEach(function (h, k) { sel.appendChild(el("option", { value: k }, "layer " + h.layer + ", head " + h.head + " \u00b7 " + h.label)); });
      sel.value = s < chosen.length ? chosen[s] : "";
      controls.appendChild(sel); sels.push(sel);
    }
    var pairSel = el("select", { "class": "cmp-pair", "aria-label": "pair" });
    d.pairs.forEach(function (q, k) { pairSel.appendChild(el("option", { value: k }, "pair " + q.index + " \u00b7 " + plain(q.id))); });
    pairSel.value = pairIx;
    controls.appendChild(el("span", { "class": "atlas-muted" }, "on"));
    controls.appendChild(pairSel);
    root.appendChild(controls);
    var grid = el("div", { "class": "atlas-compare-grid" });
    root.appendChild(grid);
    function draw() {
      var ks = sels.map(function (x) { return x.value === "" ? null : +x.value; }).filter(function (k) { return k !== null; });
      var q = d.pairs[+pairSel.value], att = bytes(q.att), n = q.n;
      var hp = new URLSearchParams();
      hp.set("h", ks.map(function (k) { return d.head_info[k].layer + "-" + d.head_info[k].head; }).join(","));
      hp.set("pair", pairSel.value);
      history.replaceState(null, "", "#" + hp.toString());
      grid.textContent = "";
      grid.style.gridTemplateColumns = "repeat(" + Math.max(1, ks.length) + ", minmax(0, 1fr))";
      root.setAttribute("data-heads", ks.length);
      ks.forEach(function (k) {
        var h = d.head_info[k], col = el("div", { "class": "cmp-col" });
        var title = el("div", { "class": "card-title" });
        title.appendChild(el("a", { href: h.href }, "layer " + h.layer + ", head " + h.head));
        title.appendChild(document.createTextNode(" "));
        title.appendChild(el("span", { "class": "label label-" + h.label }, h.label));
        col.appendChild(title);
        var bars = el("div", { "class": "cmp-scores" }), heat = el("div", { "class": "cmp-heat" });
        col.appendChild(bars); col.appendChild(heat);
        grid.appendChild(col);
        var cfg = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud"] };
        Plotly.newPlot(bars, [
          { type: "bar", x: d.patterns, y: h.scores.map(function (v) { return v === null ? 0 : v; }),
            marker: { color: d.patterns.map(function (x) { return x === h.label ? d.colors[x] : "#9aa5b1"; }) },
            hovertemplate: "%{x}: %{y:.3f}<extra></extra>" },
          { type: "scatter", mode: "markers", x: d.patterns, y: d.thresholds, hoverinfo: "skip",
            marker: { symbol: "line-ew-open", size: 22, color: "#222", line: { width: 2, color: "#222" } } }
        ], { height: 220, margin: { l: 35, r: 5, t: 5, b: 80 }, showlegend: false, yaxis: { range: [0, 1.02], title: { text: "score" } },
             font: font(), paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" }, cfg);
        var m = matrix(q, att, h.layer, h.head), idx = [];
        for (var i = 0; i < n; i++) idx.push(i);
        var axis = { tickmode: "array", tickvals: idx, ticktext: q.tokens, showgrid: false, zeroline: false, tickfont: { size: 9 } };
        Plotly.newPlot(heat, [{ type: "heatmap", z: m, zmin: 0, zmax: 1, colorscale: BLUES, showscale: false,
                                hovertemplate: "%{y} \u2192 %{x}: %{z:.3f}<extra></extra>" }],
          { height: 330, margin: { l: 70, r: 5, t: 5, b: 70 }, font: font(),
            xaxis: Object.assign({ tickangle: -60, title: { text: "key" } }, axis),
            yaxis: Object.assign({ autorange: "reversed", title: { text: "query" } }, axis),
            paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" }, cfg);
      });
    }
    sels.concat([pairSel]).forEach(function (x) { x.addEventListener("change", draw); });
    draw();
    root.setAttribute("data-rendered", "1");
  }

  window.AtlasViews = {
    /* Draw one view element (called by atlas.js when it scrolls into sight). */
    render: function (root) {
      if (root.getAttribute("data-rendered")) return;
      if (root.classList.contains("atlas-headview")) headView(root);
      else if (root.classList.contains("atlas-modelview")) modelView(root);
      else if (root.classList.contains("atlas-qkview")) qkView(root);
      else if (root.classList.contains("atlas-compareview")) compareView(root);
    }
  };
})();
