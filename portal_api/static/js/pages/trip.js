// One of my trips: the track and driving events on a map, the summary and the score breakdown.

import { api, webConfig } from "../api.js";
import { componentBars } from "../charts.js";
import {
  facts, fmtDuration, fmtKm, fmtNum, fmtPercent, fmtTime, h, section, table, words,
} from "../dom.js";
import { tripMap } from "../map.js";

export const title = "Trip";

export function render(page, { params }) {
  const [tripId] = params;
  const heading = h("h1", {}, `Trip ${tripId}`);

  const body = section("Route and events", "trip-view", async (el) => {
    const [feature, config] = await Promise.all([api(`/v1/me/trips/${tripId}`), webConfig()]);
    const t = feature.properties;
    heading.textContent = `Trip of ${fmtTime(t.start_ts)}`;
    const line = feature.geometry?.type === "LineString" ? feature.geometry.coordinates : null;
    const events = feature.events?.features ?? [];
    el.append(
      tripMap({ line, events, start: t.start, end: t.end, tilesUrl: config.map_tiles_url }),
      facts([
        ["Start", fmtTime(t.start_ts)],
        ["End", fmtTime(t.end_ts)],
        ["Distance", fmtKm(t.distance_m / 1000)],
        ["Duration", fmtDuration(t.duration_s)],
        ["Driving / idle", `${fmtDuration(t.driving_s)} / ${fmtDuration(t.idle_s)}`],
        ["Average / top speed", `${fmtNum(t.avg_speed_kmh, 0)} / ${fmtNum(t.max_speed_kmh, 0)} km/h`],
        ["Urban · rural · motorway", `${fmtPercent(t.urban_share)} · ${fmtPercent(t.rural_share)} · `
          + `${fmtPercent(t.motorway_share)}`],
        ["At night", fmtPercent(t.night_share)],
        ["Score", h("strong", { testid: "trip-score" }, fmtNum(t.score))],
      ], { testid: "trip-summary" }),
      h("h3", {}, "Driving events"),
      table({
        caption: "Driving events on this trip", testid: "trip-events", rowTestid: "trip-event-row",
        rows: events.map((e) => e.properties), empty: "No driving events on this trip.",
        columns: [
          { label: "When", nowrap: true, cell: (e) => fmtTime(e.ts) },
          { label: "Event", cell: (e) => words(e.kind) },
          { label: "Severity", num: true, cell: (e) => String(e.severity) },
          { label: "Peak", num: true, cell: (e) => e.peak === null ? "—" : `${fmtNum(e.peak)} ${e.peak_unit ?? ""}` },
        ],
      }));
    const parts = t.score_explanation?.components ?? [];
    if (parts.length) {
      el.append(h("h3", {}, "Score breakdown"),
        componentBars(parts.map((c) => ({ label: words(c.name), value: c.sub_score })),
          { label: "Components of this trip's score", testid: "trip-components-chart" }),
        table({
          caption: "Score components of this trip", testid: "trip-components", rowTestid: "trip-component", rows: parts,
          columns: [
            { label: "Component", cell: (c) => words(c.name) },
            { label: "Sub-score", num: true, cell: (c) => fmtNum(c.sub_score) },
            { label: "Weight", num: true, cell: (c) => c.weight === undefined ? "—" : fmtNum(c.weight, 2) },
            { label: "Counted", cell: (c) => c.applied === false ? "no" : "yes" },
          ],
        }));
    }
  });

  page.append(h("p", {}, h("a", { href: "#/driver", testid: "back-to-trips" }, "← My trips")), heading, body);
}
