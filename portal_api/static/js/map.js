// A trip map: the track (GeoJSON LineString) and events as SVG in Web Mercator, on a plain
// background or over <img> map tiles when the portal has a tile URL template ({z}/{x}/{y}).

import { h, s, words } from "./dom.js";

const W = 640;
const H = 400;
const PAD = 28;
const TILE = 256;
const MAX_ZOOM = 18;

/** lon/lat → world pixels at zoom z (Web Mercator, as map tiles use). */
export function project([lon, lat], z) {
  const size = TILE * 2 ** z;
  const sin = Math.sin((Math.max(-85.0511, Math.min(85.0511, lat)) * Math.PI) / 180);
  return [((lon + 180) / 360) * size, (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * size];
}

/** The zoom and pixel offset that fit all positions into the W×H view. */
export function fit(positions) {
  const world = positions.map((p) => project(p, 0));
  const xs = world.map((p) => p[0]);
  const ys = world.map((p) => p[1]);
  const dx = Math.max(...xs) - Math.min(...xs);
  const dy = Math.max(...ys) - Math.min(...ys);
  const scale = Math.min((W - 2 * PAD) / (dx || 1e-12), (H - 2 * PAD) / (dy || 1e-12));
  const z = Math.max(0, Math.min(MAX_ZOOM, Math.floor(Math.log2(scale))));
  const k = 2 ** z;
  const cx = ((Math.max(...xs) + Math.min(...xs)) / 2) * k;
  const cy = ((Math.max(...ys) + Math.min(...ys)) / 2) * k;
  return { z, ox: cx - W / 2, oy: cy - H / 2 };
}

function tiles(template, { z, ox, oy }) {
  const n = 2 ** z;
  const out = [];
  for (let ty = Math.floor(oy / TILE); ty <= Math.floor((oy + H) / TILE); ty++) {
    if (ty < 0 || ty >= n) continue;
    for (let tx = Math.floor(ox / TILE); tx <= Math.floor((ox + W) / TILE); tx++) {
      const x = ((tx % n) + n) % n;
      const src = template.replaceAll("{z}", z).replaceAll("{x}", x).replaceAll("{y}", ty).replaceAll("{s}", "a");
      const pct = (v, total) => `${((v / total) * 100).toFixed(4)}%`;
      out.push(h("img", {
        src, alt: "", class: "tile", loading: "lazy", draggable: "false", testid: "map-tile",
        style: `left:${pct(tx * TILE - ox, W)};top:${pct(ty * TILE - oy, H)};`
          + `width:${pct(TILE, W)};height:${pct(TILE, H)}`,
      }));
    }
  }
  return out;
}

function scaleBar({ z, oy }) {
  // metres per pixel at the view's centre latitude
  const yWorld = (oy + H / 2) / 2 ** z / TILE;
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - 2 * yWorld))) * 180) / Math.PI;
  const mpp = (156543.03392 * Math.cos((lat * Math.PI) / 180)) / 2 ** z;
  const target = mpp * 120;
  const p = 10 ** Math.floor(Math.log10(target));
  const metres = [5, 2, 1].map((m) => m * p).find((m) => m <= target) ?? p;
  const px = metres / mpp;
  const label = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
  return s("g", { class: "scale", transform: `translate(${PAD}, ${H - 16})` },
    s("path", { d: `M0,-6 V0 H${px.toFixed(1)} V-6` }), s("text", { x: px + 6, y: 0 }, label));
}

/**
 * The map figure. line: LineString coordinates or null; events: GeoJSON Features with Point
 * geometry; start/end: Point geometries or null.
 */
export function tripMap({ line, events = [], start = null, end = null, tilesUrl = "" }) {
  const eventPoints = events.filter((e) => e.geometry?.type === "Point");
  const positions = [...(line ?? []), ...eventPoints.map((e) => e.geometry.coordinates),
    ...[start, end].filter(Boolean).map((p) => p.coordinates)];
  if (!positions.length) {
    return h("p", { class: "muted", testid: "trip-map-empty" }, "No positions were recorded for this trip.");
  }
  const view = fit(positions);
  const px = (pos) => {
    const [x, y] = project(pos, view.z);
    return [x - view.ox, y - view.oy];
  };
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "map-overlay", role: "img", testid: "trip-map-svg",
    "aria-label": `Map of the trip: ${line ? `track of ${line.length} points` : "no track"}, `
      + `${eventPoints.length} driving event(s)`,
  });
  if (!tilesUrl) svg.append(s("rect", { x: 0, y: 0, width: W, height: H, class: "map-bg" }));
  if (line && line.length) {
    const d = line.map((pos, i) => {
      const [x, y] = px(pos);
      return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    }).join(" ");
    svg.append(s("path", { d, class: "track-casing" }), s("path", { d, class: "track", testid: "trip-track" }));
  }
  for (const [point, kind, text] of [[start, "start", "Start"], [end, "end", "End"]]) {
    if (!point) continue;
    const [x, y] = px(point.coordinates);
    svg.append(s("circle", { cx: x, cy: y, r: 7, class: `endpoint ${kind}`, testid: `trip-${kind}` },
      s("title", {}, text)));
  }
  for (const e of eventPoints) {
    const [x, y] = px(e.geometry.coordinates);
    const p = e.properties ?? {};
    svg.append(s("g", { class: `event sev-${p.severity ?? 1}`, testid: "trip-event-marker", "data-kind": p.kind },
      s("circle", { cx: x, cy: y, r: 6 + Math.min(4, Number(p.severity ?? 1)) }),
      s("title", {}, `${words(p.kind)}, severity ${p.severity ?? "—"}`)));
  }
  svg.append(scaleBar(view));
  const layers = h("div", { class: "map", style: `aspect-ratio:${W}/${H}` },
    tilesUrl ? h("div", { class: "tiles", "aria-hidden": "true" }, tiles(tilesUrl, view)) : null, svg);
  let host = "";
  try {
    host = tilesUrl ? new URL(tilesUrl.replaceAll(/[{}]/g, ""), window.location.href).host : "";
  } catch {
    host = "";
  }
  return h("figure", { class: "trip-map", testid: "trip-map" }, layers,
    h("figcaption", { class: "muted" },
      h("span", { class: "legend track" }, "track"), " ", h("span", { class: "legend start" }, "start"), " ",
      h("span", { class: "legend end" }, "end"), " ", h("span", { class: "legend event" }, "driving event"),
      host ? ` · map tiles: ${host}` : ""));
}
