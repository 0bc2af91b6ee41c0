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

  function render(el) {
    var s = spec(el);
    var fig = s.figure;
    if (s.hover_tokens) addHoverTokens(fig, s.hover_tokens);
    var config = { displaylogo: false, responsive: false, staticPlot: !!s.static,
                   modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };
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
      el.setAttribute("data-rendered", "1");
    });
  }

  /* The corpus table: one JSON array, searched and paginated in the page. */
  function corpusTable(root) {
    var rows = JSON.parse(document.getElementById(root.getAttribute("data-rows")).textContent);
    var input = root.querySelector("input[type=search]");
    var tbody = root.querySelector("tbody");
    var info = root.querySelector(".atlas-table-info");
    var prev = root.querySelector("button.prev");
    var next = root.querySelector("button.next");
    var perPage = 50, page = 0, shown = rows;

    function cell(tr, text, cls, href) {
      var td = document.createElement("td");
      td.dir = "auto";  // Arabic or Hebrew text runs right to left in its own cell
      if (cls) td.className = cls;
      if (href) {
        var a = document.createElement("a");
        a.href = href;
        a.textContent = text;
        td.appendChild(a);
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    }

    function draw() {
      tbody.textContent = "";
      var start = page * perPage;
      shown.slice(start, start + perPage).forEach(function (r) {
        var tr = document.createElement("tr");
        cell(tr, r.index, "num");
        cell(tr, r.id, "pair-id", r.href);
        cell(tr, r.a, "text");
        cell(tr, r.b, "text");
        cell(tr, r.top + " (" + r.heads + " heads)", "label label-" + r.top);
        tbody.appendChild(tr);
      });
      var pages = Math.max(1, Math.ceil(shown.length / perPage));
      info.textContent = shown.length + " of " + rows.length + " pairs \u00b7 page " + (page + 1) + " of " + pages;
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
    }

    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      shown = !q ? rows : rows.filter(function (r) {
        return (r.id + "\n" + r.a + "\n" + r.b + "\n" + r.top + "\n" + r.tags).toLowerCase().indexOf(q) >= 0;
      });
      page = 0;
      draw();
    });
    prev.addEventListener("click", function () { page = Math.max(0, page - 1); draw(); });
    next.addEventListener("click", function () { page += 1; draw(); });
    draw();
  }

  function init() {
    document.querySelectorAll(".atlas-figure").forEach(function (el) {
      if (!el.getAttribute("data-rendered")) render(el);
    });
    document.querySelectorAll(".atlas-corpus").forEach(corpusTable);
    if (window.AtlasViews) window.AtlasViews.init();
  }

  window.Atlas = { spec: spec, render: render };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
