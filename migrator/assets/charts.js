// Small SVG charts drawn without any library: line/area series and bar histograms.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function svg(host) {
    host.textContent = "";
    return el("svg", { viewBox: "0 0 400 170", preserveAspectRatio: "none" }, host);
  }
  function fmt(v) {
    const a = Math.abs(v);
    if (a >= 1e12) return (v / 1e12).toFixed(1) + "T";
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 10) / 10);
  }
  const L = 40, R = 395, T = 8, B = 150;
  function axes(s, max, xlabels) {
    el("line", { x1: L, y1: B, x2: R, y2: B, stroke: "#bbb" }, s);
    el("line", { x1: L, y1: T, x2: L, y2: B, stroke: "#bbb" }, s);
    el("text", { x: 2, y: T + 8 }, s).textContent = fmt(max);
    el("text", { x: 2, y: B }, s).textContent = "0";
    (xlabels || []).forEach(([x, t]) => { el("text", { x: x, y: 165 }, s).textContent = t; });
  }
  function minuteLabel(m) {
    const d = new Date(m * 60000);
    return d.toISOString().substring(11, 16);
  }
  // series: [{name, values, cls}], minutes: x values (unix minutes).
  function lines(host, minutes, series) {
    const s = svg(host);
    const n = minutes.length;
    if (!n) { el("text", { x: 150, y: 80 }, s).textContent = "no data yet"; return; }
    let max = 1;
    series.forEach(se => se.values.forEach(v => { if (v > max) max = v; }));
    const x = i => L + (R - L) * (n === 1 ? 0 : i / (n - 1));
    const y = v => B - (B - T) * (v / max);
    const labels = [[L, minuteLabel(minutes[0])], [R - 30, minuteLabel(minutes[n - 1])]];
    axes(s, max, labels);
    series.forEach(se => {
      let d = "";
      se.values.forEach((v, i) => { d += (i ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1); });
      el("path", { d: d, fill: "none", stroke: se.color || "#2f6fde", "stroke-width": 1.5 }, s)
        .appendChild(el("title", {})).textContent = se.name;
    });
  }
  // bars: [[label, value]]
  function bars(host, data, color) {
    const s = svg(host);
    if (!data.length) { el("text", { x: 150, y: 80 }, s).textContent = "no data yet"; return; }
    let max = 1;
    data.forEach(([, v]) => { if (v > max) max = v; });
    axes(s, max, []);
    const w = (R - L) / data.length;
    data.forEach(([label, v], i) => {
      const h = (B - T) * (v / max);
      const r = el("rect", { x: L + i * w + 1, y: B - h, width: Math.max(w - 2, 1), height: h, fill: color || "#f2b33d" }, s);
      el("title", {}, r).textContent = label + ": " + v;
      if (data.length <= 16 || i % Math.ceil(data.length / 8) === 0) {
        el("text", { x: L + i * w + 1, y: 165 }, s).textContent = label;
      }
    });
  }
  return { lines, bars, fmt };
})();
