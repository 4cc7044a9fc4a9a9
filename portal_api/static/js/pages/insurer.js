// Insurer dashboard: policyholders with 30-day scores, one policyholder's trend, mileage, risk
// events and trips, and the portfolio's (k-anonymous) score distribution.

import { api } from "../api.js";
import { barChart, lineChart } from "../charts.js";
import {
  clear, fmtDate, fmtDuration, fmtKm, fmtNum, fmtPercent, fmtSpeed, fmtTime, h, pagedTable, section, table, words,
} from "../dom.js";

export const title = "Insurer dashboard";

function events30(counts) {
  const entries = Object.entries(counts ?? {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return entries.map(([k, n]) => `${words(k)}: ${n}`).join(", ");
}

function components(c) {
  const entries = Object.entries(c ?? {});
  return entries.length ? entries.map(([k, v]) => `${words(k)} ${v}`).join(", ") : "—";
}

function detail(holder) {
  const vid = holder.vehicle_id;
  const base = `/v1/insurer/policyholders/${vid}`;
  const name = `${holder.display_name} — ${[holder.make, holder.model].filter(Boolean).join(" ") || `vehicle ${vid}`}`;

  const scores = section("Score trend per week", "insurer-scores", async (body) => {
    const rows = await api(`${base}/scores`, { query: { period: "week" } });
    if (rows.length) {
      body.append(lineChart(rows.map((r) => ({ label: fmtDate(r.period_start).slice(5), value: r.score })),
        { label: `Weekly driving score of ${holder.display_name}`, testid: "score-trend-chart" }));
    }
    body.append(table({
      caption: "Weekly scores", testid: "scores-table", rowTestid: "score-row", rows, empty: "No scored days yet.",
      columns: [
        { label: "Week of", nowrap: true, cell: (r) => fmtDate(r.period_start) },
        { label: "Days", num: true, cell: (r) => String(r.days) },
        { label: "Distance", num: true, cell: (r) => fmtKm(r.distance_km) },
        { label: "Score", num: true, cell: (r) => fmtNum(r.score) },
        { label: "Components", cell: (r) => components(r.components) },
      ],
    }));
  }, { level: "h3" });

  const mileage = section("Mileage per month", "insurer-mileage", async (body) => {
    const rows = await api(`${base}/mileage`, { query: { period: "month" } });
    if (rows.length) {
      body.append(barChart(rows.map((r) => ({ label: r.period_start.slice(0, 7), value: r.distance_km })),
        { label: `Monthly distance of ${holder.display_name}`, testid: "mileage-chart", unit: " km" }));
    }
    body.append(table({
      caption: "Mileage statement", testid: "mileage-table", rowTestid: "mileage-row", rows,
      empty: "No mileage recorded.",
      columns: [
        { label: "Month", nowrap: true, cell: (r) => r.period_start.slice(0, 7) },
        { label: "Distance", num: true, cell: (r) => fmtKm(r.distance_km) },
        { label: "Driving time", num: true, cell: (r) => `${fmtNum(r.driving_h)} h` },
        { label: "Days with data", num: true, cell: (r) => String(r.days_with_data) },
      ],
    }));
  }, { level: "h3" });

  const events = section("Risk events", "insurer-events", async (body) => {
    body.append(await pagedTable({
      caption: "Risk events", testid: "events-table", rowTestid: "event-row", empty: "No risk events.",
      columns: [
        { label: "When", nowrap: true, cell: (e) => fmtTime(e.ts) },
        { label: "Event", cell: (e) => words(e.kind) },
        { label: "Severity", num: true, cell: (e) => String(e.severity) },
        { label: "Peak", num: true, cell: (e) => e.peak === null ? "—" : `${fmtNum(e.peak)} ${e.peak_unit ?? ""}` },
        { label: "Duration", num: true, cell: (e) => e.duration_s === null ? "—" : `${fmtNum(e.duration_s, 0)} s` },
        { label: "Place", cell: (e) => e.location ? e.location.coordinates.map((c) => c.toFixed(4)).join(", ")
          : h("span", { class: "muted" }, "not shared") },
      ],
    }, (cursor) => api(`${base}/events`, { query: { cursor, limit: 50 } })));
  }, { level: "h3" });

  const trips = section("Trips", "insurer-trips", async (body) => {
    body.append(await pagedTable({
      caption: "Trip summaries", testid: "insurer-trips-table", rowTestid: "insurer-trip-row", empty: "No trips.",
      columns: [
        { label: "Start", nowrap: true, cell: (t) => fmtTime(t.start_ts) },
        { label: "Distance", num: true, cell: (t) => fmtKm(t.distance_m / 1000) },
        { label: "Duration", num: true, cell: (t) => fmtDuration(t.duration_s) },
        { label: "Max speed", num: true, cell: (t) => fmtSpeed(t.max_speed_kmh) },
        { label: "Night", num: true, cell: (t) => fmtPercent(t.night_share) },
        { label: "Motorway", num: true, cell: (t) => fmtPercent(t.motorway_share) },
      ],
    }, (cursor) => api(`${base}/trips`, { query: { cursor, limit: 20 } })));
  }, { level: "h3" });

  return [h("h2", { id: "policyholder-heading", testid: "policyholder-name", tabindex: "-1" }, name),
    h("div", { class: "grid" }, scores, mileage), events, trips];
}

function distribution(d) {
  const summary = h("p", { testid: "portfolio-summary" },
    `${d.policyholders} policyholder(s), ${d.scored} with a 30-day score`,
    d.suppressed ? "" : ` · mean ${fmtNum(d.mean)} · median ${fmtNum(d.median)}`);
  if (d.suppressed) {
    return [summary, h("p", { class: "status warn", testid: "portfolio-suppressed" },
      `The distribution is hidden while fewer than ${d.k} policyholders are scored, so that no one's score `
      + "can be singled out.")];
  }
  const bars = d.buckets.map((b) => ({ label: `${b.from}–${b.to}`, value: b.count }));
  return [summary, barChart(bars, { label: "Policyholders per 30-day score band", testid: "portfolio-chart" }),
    table({
      caption: "Score distribution", testid: "portfolio-table", rows: d.buckets,
      columns: [{ label: "Score band", cell: (b) => `${b.from}–${b.to}` },
        { label: "Policyholders", num: true, cell: (b) => String(b.count) }],
    })];
}

export function render(page) {
  const detailHost = h("section", { class: "card", testid: "policyholder-detail", hidden: true,
    "aria-labelledby": "policyholder-heading" });
  let selected = null;

  const select = (holder, button) => {
    selected?.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-pressed", "true");
    selected = button;
    detailHost.hidden = false;
    clear(detailHost).append(...detail(holder));
    detailHost.querySelector("h2").focus();
  };

  const holders = section("Policyholders", "insurer-policyholders", async (body) => {
    body.append(await pagedTable({
      caption: "Policyholders", testid: "policyholders-table", rowTestid: "policyholder-row",
      rowId: (p) => p.vehicle_id, empty: "No policyholder has shared their driving score with you.",
      columns: [
        { label: "Policyholder", cell: (p) => p.display_name },
        { label: "Vehicle", cell: (p) => [[p.make, p.model].filter(Boolean).join(" ") || "—", h("br"),
          h("small", { class: "mono" }, p.vin ?? "")] },
        { label: "30-day score", num: true, cell: (p) => h("strong", { testid: "score-30d" }, fmtNum(p.score_30d)) },
        { label: "Distance (30 d)", num: true, cell: (p) => fmtKm(p.distance_km_30d) },
        { label: "Scored days", num: true, cell: (p) => String(p.scored_days_30d) },
        { label: "Risk events (30 d)", cell: (p) => events30(p.events_30d) },
        { label: "", cell: (p) => {
          const b = h("button", { type: "button", class: "small", "aria-pressed": "false",
            testid: "policyholder-select", "aria-label": `Details of ${p.display_name}` }, "Details");
          b.addEventListener("click", () => select(p, b));
          return b;
        } },
      ],
    }, (cursor) => api("/v1/insurer/policyholders", { query: { cursor, limit: 50 } })));
  }, { intro: "Policyholders who consented to share their driving score with you." });

  const portfolio = section("Portfolio score distribution", "insurer-portfolio", async (body) => {
    body.append(...distribution(await api("/v1/insurer/portfolio/score-distribution")));
  });

  page.append(h("h1", {}, "Insurer dashboard"), holders, detailHost, portfolio);
}
