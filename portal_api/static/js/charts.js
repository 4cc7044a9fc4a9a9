// Inline SVG charts. Each chart has a text alternative; the tables next to them carry the numbers.

import { s } from "./dom.js";

const W = 560;
const H = 200;
const M = { top: 12, right: 12, bottom: 28, left: 40 };

function frame(label, testid) {
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label, testid });
}

function yAxis(svg, yMax, ticks, fmt) {
  const ih = H - M.top - M.bottom;
  for (let i = 0; i <= ticks; i++) {
    const v = (yMax * i) / ticks;
    const y = M.top + ih - (v / yMax) * ih;
    svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "gridline" }),
      s("text", { x: M.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, fmt(v)));
  }
}

/** points: [{ label, value (null = gap) }] on a fixed 0..yMax scale. */
export function lineChart(points, { label, testid, yMax = 100 } = {}) {
  const svg = frame(label, testid);
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  yAxis(svg, yMax, 4, (v) => String(Math.round(v)));
  const step = points.length > 1 ? iw / (points.length - 1) : 0;
  const xy = points.map((p, i) => [M.left + (points.length > 1 ? i * step : iw / 2),
    p.value === null ? null : M.top + ih - (Math.min(p.value, yMax) / yMax) * ih]);
  let d = "";
  let pen = false;
  xy.forEach(([x, y]) => {
    if (y === null) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
    pen = true;
  });
  if (d) svg.append(s("path", { d: d.trim(), class: "series" }));
  const every = Math.max(1, Math.ceil(points.length / 8));
  points.forEach((p, i) => {
    const [x, y] = xy[i];
    if (y !== null) {
      svg.append(s("circle", { cx: x, cy: y, r: 4, class: "dot" }, s("title", {}, `${p.label}: ${p.value}`)));
    }
    if (i % every === 0 || i === points.length - 1) {
      let anchor = "middle";  // the first and last labels stay inside the frame
      if (points.length > 1 && i === 0) anchor = "start";
      else if (points.length > 1 && i === points.length - 1) anchor = "end";
      svg.append(s("text", { x, y: H - 8, class: "tick", "text-anchor": anchor }, p.label));
    }
  });
  return svg;
}

/** bars: [{ label, value }]; the scale starts at 0 and ends at the largest value. */
export function barChart(bars, { label, testid, unit = "" } = {}) {
  const svg = frame(label, testid);
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const max = Math.max(1e-9, ...bars.map((b) => b.value ?? 0));
  const nice = niceCeil(max);
  yAxis(svg, nice, 4, (v) => (nice >= 10 ? String(Math.round(v)) : v.toFixed(1)));
  const slot = iw / Math.max(1, bars.length);
  const bw = Math.min(48, slot * 0.7);
  const every = Math.max(1, Math.ceil(bars.length / 10));
  bars.forEach((b, i) => {
    const v = b.value ?? 0;
    const bh = (v / nice) * ih;
    const x = M.left + i * slot + (slot - bw) / 2;
    svg.append(s("rect", { x, y: M.top + ih - bh, width: bw, height: bh, class: "bar" },
      s("title", {}, `${b.label}: ${b.value ?? "—"}${unit}`)));
    if (i % every === 0) {
      svg.append(s("text", { x: x + bw / 2, y: H - 8, class: "tick", "text-anchor": "middle" }, b.label));
    }
  });
  return svg;
}

/** Horizontal bars on a 0..100 scale: score components. */
export function componentBars(items, { label, testid } = {}) {
  const rowH = 26;
  const h = items.length * rowH + 8;
  const left = 120;
  const w = 420;
  const svg = s("svg", { viewBox: `0 0 ${left + w + 50} ${h}`, class: "chart components", role: "img",
    "aria-label": label, testid });
  items.forEach((it, i) => {
    const y = 4 + i * rowH;
    const v = Math.max(0, Math.min(100, it.value ?? 0));
    svg.append(
      s("text", { x: left - 8, y: y + 15, class: "tick", "text-anchor": "end" }, it.label),
      s("rect", { x: left, y, width: w, height: 18, class: "track" }),
      s("rect", { x: left, y, width: (v / 100) * w, height: 18, class: v < 70 ? "bar weak" : "bar" }),
      s("text", { x: left + w + 8, y: y + 15, class: "tick" }, it.value === null ? "—" : String(it.value)));
  });
  return svg;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
