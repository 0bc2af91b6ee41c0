/* Attention Atlas: renders the figures embedded in each page.
 * Every figure is a <div class="atlas-figure" data-spec=ID> followed by a
 * <script type="application/json" id=ID> holding {"figure": plotly JSON, ...}.
 * Corpus text only ever reaches the DOM through textContent or through
 * Plotly with HTML already escaped on the Python side. */
(function () {
  "use strict";

  function spec(el) {
    var node = document.getElementById(el.getAttribute("data-spec"));
    return JSON.parse(node.textContent);
  }

  /* Heatmap hover "from -> to: weight", built here from the token list
   * instead of shipping n*n strings in every page. */
  function addHoverTokens(figure, tokens) {
    var trace = figure.data[0];
    var rows = [];
    for (var i = 0; i < tokens.length; i++) {
      var row = [];
      for (var j = 0; j < tokens.length; j++) {
        row.push(i + " " + tokens[i] + " \u2192 " + j + " " + tokens[j]);
      }
      rows.push(row);
    }
    trace.customdata = rows;
    trace.hovertemplate = "%{customdata}: %{z:.3f}<extra></extra>";
  }

  /* ---------------------------------------------------------- downloads */
  function download(filename, text, mime) {
    var url = URL.createObjectURL(new Blob([text], { type: mime }));
    var a = document.createElement("a");
    a.href = url; a.download = filename;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }
  function baseName(el) { return (el.id || "figure").replace(/[^a-z0-9-]+/gi, "-"); }
  /* The numbers behind a Plotly figure: every trace's name, x, y and z, as plain nested arrays
   * (read from the decoded traces: the page's JSON may hold typed arrays as base64 "bdata"). */
  function plain(v) {
    if (ArrayBuffer.isView(v)) return Array.from(v);
    if (Array.isArray(v)) return v.map(plain);
    return v;
  }
  function figureData(gd) {
    return (gd.data || []).map(function (t, i) {
      var full = (gd._fullData || [])[i] || {}, out = { type: t.type, name: t.name };
      ["x", "y", "z", "text"].forEach(function (k) {
        var v = full[k] !== undefined ? full[k] : t[k];
        if (v !== undefined && (t[k] !== undefined || k === "z")) out[k] = plain(v);
      });
      return out;
    });
  }

  /* ------------------------------------------------------ light and dark */
  function dark() { return document.body.getAttribute("data-md-color-scheme") === "slate"; }
  function themeFont() { return dark() ? "#e3e3e3" : "#222222"; }
  function retheme() {
    document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      if (gd.layout) Plotly.relayout(gd, { "font.color": themeFont() });
    });
  }

  /* --------------------------------------------------------- colour scale */
  /* Attention heatmaps (zmin 0, zmax 1) can switch to the figure's own maximum, so that a
   * diffuse head is not almost white; the caption under the figure says which scale is shown. */
  function attentionHeatmap(fig) {
    var t = fig.data[0];
    return t && t.type === "heatmap" && t.zmin === 0 && t.zmax === 1;
  }
  function zmaxOf(gd) {
    var m = 0, z = gd.data[0].z;
    for (var i = 0; i < z.length; i++) for (var j = 0; j < z[i].length; j++) m = Math.max(m, z[i][j]);
    return m || 1;
  }
  function scaleCaption(el, gd) {
    var cap = el.nextElementSibling && el.nextElementSibling.classList.contains("atlas-scale") ? el.nextElementSibling : null;
    if (!cap) { cap = document.createElement("p"); cap.className = "atlas-scale atlas-muted"; el.after(cap); }
    var zmax = gd.data[0].zmax;
    cap.textContent = zmax === 1 ? "Colour scale: fixed, 0 (white) to 1 (darkest)."
      : "Colour scale: 0 (white) to this figure's maximum, " + zmax.toFixed(3) + " (darkest).";
    el.setAttribute("data-zmax", zmax);
  }

  function render(el) {
    var s = spec(el);
    var fig = s.figure;
    if (s.hover_tokens) addHoverTokens(fig, s.hover_tokens);
    fig.layout.font = Object.assign({}, fig.layout.font, { color: themeFont() });
    var name = baseName(el);
    var buttons = [
      { name: "Download as SVG", icon: Plotly.Icons.camera,
        click: function (gd) { Plotly.downloadImage(gd, { format: "svg", filename: name }); } },
      { name: "Download the numbers (JSON)", icon: Plotly.Icons.disk,
        click: function (gd) { download(name + ".json", JSON.stringify(figureData(gd)), "application/json"); } }
    ];
    var scalable = attentionHeatmap(fig) && !s.static;
    if (scalable) {
      buttons.push({ name: "Colour scale: fixed 0-1 / this figure's maximum", icon: Plotly.Icons.autoscale,
        click: function (gd) {
          Plotly.restyle(gd, { zmax: gd.data[0].zmax === 1 ? zmaxOf(gd) : 1 }).then(function () { scaleCaption(el, gd); });
        } });
    }
    var config = { displaylogo: false, responsive: false, staticPlot: !!s.static,
                   toImageButtonOptions: { format: "png", filename: name, scale: 2 },
                   modeBarButtonsToAdd: buttons,
                   modeBarButtonsToRemove: ["sendDataToCloud", "sendChartToCloud", "lasso2d", "select2d"] };
    return Plotly.newPlot(el, fig.data, fig.layout, config).then(function (gd) {
      if (s.links || s.point_links) {
        gd.on("plotly_click", function (ev) {
          var p = ev.points && ev.points[0];
          if (!p) return;
          var href = s.point_links
            ? s.point_links[p.curveNumber] && s.point_links[p.curveNumber][p.pointNumber]
            : s.links[Math.round(p.y)] && s.links[Math.round(p.y)][Math.round(p.x)];
          if (href) window.location.href = href;
        });
        gd.style.cursor = "pointer";
      }
      if (scalable) scaleCaption(el, gd);
      el.setAttribute("data-rendered", "1");
    });
  }

  /* Figures render when they come near the viewport (a long pair page holds dozens). */
  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (!e.isIntersecting) return;
      observer.unobserve(e.target);
      if (e.target.classList.contains("atlas-figure")) render(e.target);
      else if (window.AtlasViews) window.AtlasViews.render(e.target);
    });
  }, { rootMargin: "400px 0px" }) : null;
  function lazily(el, now) {
    if (el.getAttribute("data-rendered") || el.getAttribute("data-queued")) return;
    el.setAttribute("data-queued", "1");
    if (observer) observer.observe(el); else now(el);
  }

  /* A table written into the page (so search finds every row), made filterable, sortable (click
   * a header; numbers sort as numbers) and paginated here. Rows carry their text; nothing is
   * parsed as HTML. Used by the all-pairs table and the heads table. */
  function dataTable(root) {
    var table = root.querySelector("table"), tbody = table.tBodies[0];
    var rows = [].slice.call(tbody.rows), shown = rows;
    var input = root.querySelector("input[type=search]");
    var info = root.querySelector(".atlas-table-info");
    var prev = root.querySelector("button.prev"), next = root.querySelector("button.next");
    var perPage = +(root.getAttribute("data-per-page") || 50), page = 0, sortCol = -1, sortDir = 1;
    var noun = root.getAttribute("data-noun") || "rows";
    function key(row, col) {
      var cell = row.cells[col], v = cell.getAttribute("data-sort");
      if (v === null) v = cell.textContent.trim();
      var x = parseFloat(v);
      return isNaN(x) || !/^-?[0-9.]/.test(v) ? v.toLowerCase() : x;
    }
    function draw() {
      var pages = Math.max(1, Math.ceil(shown.length / perPage));
      page = Math.min(page, pages - 1);
      rows.forEach(function (r) { r.hidden = true; });
      shown.forEach(function (r, k) { tbody.appendChild(r); r.hidden = Math.floor(k / perPage) !== page; });
      if (info) info.textContent = shown.length + " of " + rows.length + " " + noun + " \u00b7 page " + (page + 1) + " of " + pages;
      if (prev) prev.disabled = page === 0;
      if (next) next.disabled = page >= pages - 1;
    }
    function filter() {
      var q = input ? input.value.trim().toLowerCase() : "";
      shown = rows.filter(function (r) { return !q || r.textContent.toLowerCase().indexOf(q) >= 0; });
      if (sortCol >= 0) {
        shown.sort(function (a, b) {
          var x = key(a, sortCol), y = key(b, sortCol);
          if (typeof x !== typeof y) return (typeof x === "number" ? -1 : 1);
          return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
        });
      }
      page = 0;
      draw();
    }
    [].forEach.call(table.tHead.rows[0].cells, function (th, col) {
      if (th.classList.contains("nosort")) return;
      th.classList.add("sortable");
      th.setAttribute("tabindex", "0");
      th.addEventListener("click", function () {
        sortDir = sortCol === col ? -sortDir : (th.classList.contains("desc-first") ? -1 : 1);
        sortCol = col;
        [].forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        filter();
      });
    });
    if (input) input.addEventListener("input", filter);
    if (prev) prev.addEventListener("click", function () { page = Math.max(0, page - 1); draw(); });
    if (next) next.addEventListener("click", function () { page += 1; draw(); });
    root.atlasRows = function () { return shown; };
    // ticked rows (the heads table) feed the side-by-side link
    var link = root.querySelector(".atlas-compare-link");
    if (link) {
      root.addEventListener("change", function () {
        var ticked = [].map.call(root.querySelectorAll("input.atlas-tick:checked"), function (x) { return x.value; });
        link.href = link.getAttribute("data-base") + (ticked.length ? "#h=" + ticked.slice(0, 4).join(",") : "");
        link.classList.toggle("md-button--primary", ticked.length >= 2 && ticked.length <= 4);
      });
    }
    filter();
  }

  function init() {
    document.querySelectorAll(".atlas-figure").forEach(function (el) { lazily(el, render); });
    if (window.AtlasViews) {
      document.querySelectorAll(".atlas-headview, .atlas-modelview, .atlas-qkview, .atlas-compareview").forEach(function (el) {
        lazily(el, window.AtlasViews.render);
      });
    }
    document.querySelectorAll(".atlas-table").forEach(function (root) {
      if (!root.getAttribute("data-ready")) { root.setAttribute("data-ready", "1"); dataTable(root); }
    });
  }

  window.Atlas = { spec: spec, render: render, download: download, themeFont: themeFont };
  new MutationObserver(retheme).observe(document.body, { attributes: true, attributeFilter: ["data-md-color-scheme"] });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
  // pages swapped in by Material's instant navigation (init is idempotent)
  if (window.document$ && window.document$.subscribe) window.document$.subscribe(function () { init(); });
})();
