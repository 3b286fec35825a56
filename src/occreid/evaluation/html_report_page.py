"""The page of report.html: HTML skeleton, CSS and the vanilla JS that pages, sorts, filters and self-tests.

Kept as a Python string (not a package data file) so an installed wheel always carries it. Slots are
`<!--SLOT:name-->` comments, filled by `occreid.evaluation.html_report`.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title><!--SLOT:title--></title>
<script>
// Collect errors first, so the #selftest mode can report any later script's failure.
window.__reportErrors = [];
window.addEventListener("error", function (e) { window.__reportErrors.push(String(e.message || e)); });
(function () {
  var orig = console.error;
  console.error = function () {
    window.__reportErrors.push(Array.prototype.map.call(arguments, String).join(" "));
    return orig.apply(console, arguments);
  };
})();
</script>
<style>
body { font: 13px/1.35 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 18px 0 6px; }
table.kv, table.grp { border-collapse: collapse; margin-right: 24px; }
table.kv td, table.grp td, table.grp th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
table.grp th { background: #f4f4f4; }
.top { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 12px; }
.controls { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #ccc;
  z-index: 2; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
#rows { border-collapse: collapse; margin-top: 6px; }
#rows > tbody > tr { border-bottom: 1px solid #e4e4e4; }
#rows > tbody > tr.hl { background: #fff6c8; }
#rows td { vertical-align: top; padding: 4px 3px; }
.card { width: 74px; font-size: 11px; text-align: center; overflow: hidden; }
.card img, .card .noimg { height: 80px; max-width: 64px; border: 4px solid #000; display: block;
  margin: 0 auto; background: #eee; }
.card .noimg { width: 40px; }
.card.c img, .card.c .noimg { border-color: #00aa00; } .card.w img, .card.w .noimg { border-color: #dc0000; }
.card.j img, .card.j .noimg { border-color: #969696; }
.qinfo { width: 150px; font-size: 12px; padding-left: 6px !important; word-break: break-all; }
.fail { color: #c00; font-weight: bold; } .ok { color: #080; font-weight: bold; }
.bars { display: flex; gap: 1px; height: 16px; align-items: flex-end; justify-content: center; margin: 2px 0; }
.bars i { display: block; width: 5px; background: #4a7bd0; min-height: 1px; }
.bars i.lo { background: #bbb; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; vertical-align: middle; }
#pager button { margin: 0 2px; }
</style>
</head>
<body>
<h1><!--SLOT:title--></h1>
<div class="top">
<!--SLOT:summary-->
<!--SLOT:cmc-->
</div>
<!--SLOT:groups-->
<h2>Queries</h2>
<p class="legend">Frames:<span style="background:#00aa00"></span>true match<span style="background:#dc0000"></span>
wrong identity<span style="background:#969696"></span>junk (same identity and camera, ignored by the metrics).
Gallery ranks count junk images; a query's first-match rank does not (Market rule). Bars: part visibility
predicted by the method (grey below 0.5).</p>
<div class="controls">
<label>sort <select id="sort">
<option value="index">query order</option>
<option value="ap_asc">AP, worst first</option>
<option value="ap_desc">AP, best first</option>
<option value="first_desc">first-match rank, worst first</option>
<option value="first_asc">first-match rank, best first</option>
<option value="vis_asc">visible fraction, lowest first</option>
</select></label>
<label>show <select id="filter">
<option value="all">all queries</option>
<option value="r1">failures at rank 1</option>
<option value="topk">failures in the top k</option>
</select></label>
<label>group <select id="group"><option value="-1">all visibility groups</option></select></label>
<label>jump to <input id="jump" size="28" placeholder="query file name"></label>
<span id="count"></span>
<span id="pager"></span>
</div>
<table id="rows"><tbody></tbody></table>
<script type="application/json" id="report-data"><!--SLOT:data--></script>
<script>
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var Q = D.q, G = D.g, N = Q.name.length, PAGE = 40;
  var state = { sort: "index", filter: "all", group: -1, page: 0, highlight: -1 };
  var tbody = document.querySelector("#rows tbody");

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function base(p) { var s = String(p).split(/[\\/]/); return s[s.length - 1]; }
  function fmt(x, d) { return x === null ? "-" : Number(x).toFixed(d); }
  function failed(i) {
    var f = Q.first[i];
    if (state.filter === "r1") { return f !== 1; }
    if (state.filter === "topk") { return f === 0 || f > D.k; }
    return true;
  }
  function keyOf(i) {
    var ap = Q.ap[i], f = Q.first[i] === 0 ? 1e9 : Q.first[i];
    switch (state.sort) {
      case "ap_asc": return ap === null ? Infinity : ap;
      case "ap_desc": return ap === null ? Infinity : -ap;
      case "first_desc": return -f;
      case "first_asc": return f;
      case "vis_asc": return Q.vis[i] === null ? Infinity : Q.vis[i];  // unknown (no label) last
      default: return i;
    }
  }
  function order() {
    var idx = [];
    for (var i = 0; i < N; i++) {
      if (failed(i) && (state.group < 0 || Q.grp[i] === state.group)) { idx.push(i); }
    }
    var keys = {};
    idx.forEach(function (i) { keys[i] = keyOf(i); });
    idx.sort(function (a, b) { return keys[a] - keys[b] || a - b; });
    return idx;
  }
  function bars(v) {
    if (!v) { return ""; }
    var s = '<div class="bars">';
    for (var p = 0; p < v.length; p++) {
      s += '<i class="' + (v[p] < 50 ? "lo" : "") + '" style="height:' + Math.max(v[p], 4) + '%" title="' +
        esc((D.parts[p] || "part " + (p + 1)) + " " + (v[p] / 100).toFixed(2)) + '"></i>';
    }
    return s + "</div>";
  }
  function img(k, title) {
    var src = D.img[k];
    return src ? '<img loading="lazy" alt="" src="' + esc(src) + '" title="' + esc(title) + '">'
               : '<div class="noimg" title="' + esc(title) + ' (unreadable)"></div>';
  }
  function row(i) {
    var f = Q.first[i];
    var firstText = f === 0 ? '<span class="fail">no true match</span>'
      : '<span class="' + (f === 1 ? "ok" : "fail") + '">first match: rank ' + f + "</span>";
    var s = '<tr id="q' + i + '" data-q="' + i + '" data-ap="' + (Q.ap[i] === null ? "" : Q.ap[i]) +
      '" data-first="' + f + '"' + (state.highlight === i ? ' class="hl"' : "") + ">";
    s += '<td><div class="card">' + img(Q.img[i], Q.name[i]) + bars(Q.pv ? Q.pv[i] : null) + "</div></td>";
    s += '<td class="qinfo"><b>' + esc(base(Q.name[i])) + "</b><br>id " + Q.pid[i] + " · cam " + Q.cam[i] +
      "<br>AP " + fmt(Q.ap[i], 3) + "<br>" + firstText + "<br>visible " +
      (Q.vis[i] === null ? "?" : Math.round(100 * Q.vis[i]) + "%") + " (" +
      esc(D.groups[Q.grp[i]]) + ")</td>";
    for (var r = 0; r < Q.top[i].length; r++) {
      var g = Q.top[i][r];
      s += '<td><div class="card ' + Q.mark[i][r] + '">' + img(G.img[g], G.name[g] + " id " + G.pid[g] +
        " cam " + G.cam[g]) + bars(G.pv ? G.pv[g] : null) + "#" + (r + 1) + " " + fmt(Q.dist[i][r], 3) +
        "</div></td>";
    }
    return s + "</tr>";
  }
  function render() {
    var idx = order(), pages = Math.max(1, Math.ceil(idx.length / PAGE));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    var start = state.page * PAGE, html = [];
    for (var n = start; n < Math.min(idx.length, start + PAGE); n++) { html.push(row(idx[n])); }
    tbody.innerHTML = html.join("");
    document.getElementById("count").textContent = idx.length + " of " + N + " queries";
    document.getElementById("pager").innerHTML =
      '<button data-p="0">&laquo;</button><button data-p="' + (state.page - 1) + '">&lsaquo;</button> page ' +
      (state.page + 1) + " / " + pages + ' <button data-p="' + (state.page + 1) + '">&rsaquo;</button>' +
      '<button data-p="' + (pages - 1) + '">&raquo;</button>';
    return idx;
  }
  function jump(text) {
    text = String(text).trim().toLowerCase();
    if (!text) { return -1; }
    var hit = -1;
    for (var i = 0; i < N && hit < 0; i++) {
      if (base(Q.name[i]).toLowerCase() === text || Q.name[i].toLowerCase() === text) { hit = i; }
    }
    for (var j = 0; j < N && hit < 0; j++) { if (Q.name[j].toLowerCase().indexOf(text) >= 0) { hit = j; } }
    if (hit < 0) { return -1; }
    var idx = order();
    if (idx.indexOf(hit) < 0) {  // hidden by the filter: show everything
      state.filter = "all"; state.group = -1;
      document.getElementById("filter").value = "all"; document.getElementById("group").value = "-1";
      idx = order();
    }
    state.page = Math.floor(idx.indexOf(hit) / PAGE);
    state.highlight = hit;
    render();
    var el = document.getElementById("q" + hit);
    if (el && el.scrollIntoView) { el.scrollIntoView({ block: "center" }); }
    return hit;
  }

  var gsel = document.getElementById("group");
  D.groups.forEach(function (g, k) {
    var o = document.createElement("option"); o.value = String(k); o.textContent = "visible " + g; gsel.appendChild(o);
  });
  document.getElementById("sort").addEventListener("change", function (e) {
    state.sort = e.target.value; state.page = 0; render();
  });
  document.getElementById("filter").addEventListener("change", function (e) {
    state.filter = e.target.value; state.page = 0; render();
  });
  gsel.addEventListener("change", function (e) { state.group = Number(e.target.value); state.page = 0; render(); });
  document.getElementById("jump").addEventListener("keydown", function (e) {
    if (e.key === "Enter") { e.target.style.background = jump(e.target.value) < 0 ? "#fdd" : ""; }
  });
  document.getElementById("pager").addEventListener("click", function (e) {
    var p = e.target.getAttribute && e.target.getAttribute("data-p");
    if (p !== null && p !== undefined) { state.page = Number(p); render(); }
  });
  render();

  function selftest() {
    var out = { total: N, page_size: PAGE }, rows, vals, ok, k;
    function shown() { return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-q]")); }
    out.rows_first_page = shown().length;
    state.sort = "ap_asc"; state.page = 0; var idx = render();
    vals = shown().map(function (r) { return r.getAttribute("data-ap"); });
    ok = true;
    for (k = 1; k < vals.length; k++) {
      if (vals[k] !== "" && (vals[k - 1] === "" || Number(vals[k]) < Number(vals[k - 1]))) { ok = false; }
    }
    out.ap_ascending = ok;
    out.ap_asc_first = Number(shown()[0].getAttribute("data-q"));
    out.ap_asc_order = idx;
    state.sort = "vis_asc"; state.page = 0; out.vis_asc_order = render();
    state.sort = "first_desc"; idx = render();
    out.first_desc_first = Number(shown()[0].getAttribute("data-q"));
    state.sort = "index"; state.filter = "r1"; idx = render();
    out.failures_r1 = idx.length;
    out.failures_r1_rows_ok = shown().every(function (r) { return r.getAttribute("data-first") !== "1"; });
    state.filter = "topk"; idx = render();
    out.failures_topk = idx.length;
    state.filter = "all"; render();
    var last = N - 1;
    out.jump_target = last;
    out.jump_found = jump(base(Q.name[last]));
    out.jump_row_shown = !!document.querySelector('tr.hl[data-q="' + last + '"]');
    state.page = 0; state.highlight = -1; state.filter = "all"; state.sort = "index"; render();
    out.images_on_page = tbody.querySelectorAll("img").length;
    out.errors = window.__reportErrors.slice();
    var pre = document.createElement("pre");
    pre.id = "selftest-result";
    pre.textContent = JSON.stringify(out);
    document.body.insertBefore(pre, document.body.firstChild);
    window.scrollTo(0, 0);
  }
  if (location.hash === "#selftest") {
    try { selftest(); } catch (e) { window.__reportErrors.push("selftest: " + e); }
    if (!document.getElementById("selftest-result")) {
      var pre = document.createElement("pre"); pre.id = "selftest-result";
      pre.textContent = JSON.stringify({ errors: window.__reportErrors });
      document.body.insertBefore(pre, document.body.firstChild);
    }
  }
})();
</script>
</body>
</html>
"""
