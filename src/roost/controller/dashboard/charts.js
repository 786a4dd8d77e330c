// The dashboard's charts: one app's requests, latency, memory and CPU over
// the last hour or day, drawn with uPlot (vendor/, MIT) from
// /api/apps/NAME/metrics (roost.controller.history keeps the series).
// Nulls in a series are gaps (nothing heard), drawn as breaks, not zeros.
"use strict";
(function () {
  const COLOURS = ["#2f6fdf", "#1f8a4c", "#b9770e", "#c0392b", "#7d3c98", "#148f77", "#616a6b", "#d35400"];
  const CLASS_COLOUR = {"1xx": "#616a6b", "2xx": "#1f8a4c", "3xx": "#2f6fdf", "4xx": "#b9770e", "5xx": "#c0392b"};
  let plots = [];

  function token() { return localStorage.getItem("roost-token") || ""; }

  async function fetchSeries(app, span) {
    const r = await fetch(`/api/apps/${encodeURIComponent(app)}/metrics?window=${span}`,
      {headers: {"Authorization": "Bearer " + token()}});
    if (!r.ok) throw new Error(`metrics of ${app}: HTTP ${r.status}`);
    return r.json();
  }

  // A point with no neighbour (the first sample, one after a gap) makes no
  // line: draw it as a dot, and only those (dots everywhere would blur lines).
  function lonely(u, si) {
    const d = u.data[si], out = [];
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== null && (i === 0 || d[i - 1] === null) && (i === d.length - 1 || d[i + 1] === null)) out.push(i);
    }
    return out;
  }

  // Series whose every value is null or zero are left out (a chart of 1xx
  // always at zero says nothing), but the chart keeps at least one.
  function chart(el, title, unit, t, named, colourOf) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.chart = title;
    el.appendChild(box);
    let entries = Object.entries(named).filter(([, v]) => v.some((x) => x !== null && x !== 0));
    const empty = entries.length === 0;
    if (empty) entries = Object.entries(named).slice(0, 1);
    if (entries.length === 0) entries = [["no data yet", t.map(() => null)]];
    const heard = entries.reduce((n, [, v]) => n + v.filter((x) => x !== null).length, 0);
    box.dataset.points = String(heard);
    const opts = {
      title: title + (empty ? " (nothing yet)" : ""),
      // Two a row. (The page can be wider than the window for a moment, a
      // long table row: the window bounds it.)
      width: Math.max(280, Math.floor(Math.min(el.clientWidth, document.documentElement.clientWidth - 64) / 2) - 16),
      height: 180,
      scales: {x: {time: true}, y: {range: (u, lo, hi) => [0, Math.max(hi || 0, 1e-9) * 1.1]}},
      axes: [{}, {label: unit, size: 56}],
      series: [{}, ...entries.map(([name], i) => ({
        label: name, stroke: colourOf(name, i), width: 1.5, spanGaps: false,
        points: {show: true, size: 5, filter: lonely},
        value: (u, v) => v === null || v === undefined ? "-" : `${v} ${unit}`,
      }))],
    };
    plots.push(new uPlot(opts, [t, ...entries.map(([, v]) => v)], box));
  }

  async function show(el, app, span) {
    const s = await fetchSeries(app, span);
    for (const p of plots) p.destroy();
    plots = [];
    el.innerHTML = "";
    const t = s.t;
    const byIndex = (name, i) => COLOURS[i % COLOURS.length];
    chart(el, "requests per second", "req/s", t, s.rps, (name) => CLASS_COLOUR[name] || "#000");
    chart(el, "latency", "ms", t, s.latency_ms, byIndex);
    chart(el, "memory per instance", "MB", t, s.memory_mb, byIndex);
    chart(el, "CPU per instance", "% of a core", t, s.cpu_percent, byIndex);
    el.dataset.app = app;
    el.dataset.span = span;
    el.dataset.drawn = String(Date.now());
  }

  window.RoostCharts = {show};
})();
