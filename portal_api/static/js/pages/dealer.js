// Dealer dashboard: customers' vehicles with health, the lead pipeline, funnel and CSV export.

import { api } from "../api.js";
import {
  badge, errorBox, fmtKm, fmtPercent, fmtTime, h, pagedTable, say, section, statusLine, table, words,
} from "../dom.js";

export const title = "Dealer dashboard";

// The pipeline as the API enforces it (portal_api/leads.py); buttons offer only these moves.
const NEXT = {
  new: ["contacted", "appointment"],
  contacted: ["appointment"],
  appointment: ["visited", "contacted"],
  visited: [],
  lost: [],
};
const LOST_REASONS = ["not_reachable", "declined", "went_elsewhere", "already_fixed", "sold_vehicle", "other"];
const STATES = ["new", "contacted", "appointment", "visited", "lost"];

function vehicleName(v) {
  if (!v) return "—";
  return [v.make, v.model, v.model_year].filter(Boolean).join(" ") || `Vehicle ${v.vehicle_id}`;
}

function dtcList(dtcs) {
  if (!dtcs.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "plain" }, dtcs.map((d) => h("li", { testid: "dtc", "data-code": d.code },
    h("code", {}, d.code), " ", d.description,
    d.severity ? [" ", badge(d.severity, `sev-${d.severity}`)] : null)));
}

function battery(b) {
  if (!b) return "—";
  const volts = b.resting_v !== undefined && b.resting_v !== null ? ` (${b.resting_v} V)` : "";
  return [badge(b.level ?? "unknown", b.level === "ok" ? "ok" : "warn"), volts];
}

function service(svc) {
  if (!svc) return "—";
  const state = svc.due ? badge("due", "bad") : svc.due_soon ? badge("due soon", "warn") : badge("ok", "ok");
  const assumed = svc.baseline_assumed ? h("span", { class: "muted" }, " (no service recorded)") : null;
  return [state, " ", svc.reason, assumed];
}

export const VEHICLE_COLUMNS = [
  { label: "Vehicle", cell: (v) => [h("strong", {}, vehicleName(v)), h("br"),
    h("small", { class: "mono" }, v.vin ?? "")] },
  { label: "Owner", cell: (v) => (v.owner
    ? [v.owner.display_name, v.owner.email ? [h("br"), h("small", {}, v.owner.email)] : null]
    : h("span", { class: "muted" }, "no contact consent")) },
  { label: "Open trouble codes", cell: (v) => dtcList(v.open_dtcs) },
  { label: "MIL", cell: (v) => v.mil_on ? badge("on", "bad", { testid: "mil-on" }) : badge("off", "ok") },
  { label: "Battery", cell: (v) => battery(v.battery) },
  { label: "Service", cell: (v) => service(v.service) },
  { label: "Last seen", cell: (v) => [fmtTime(v.last_seen), v.online ? [" ", badge("online", "ok")] : null] },
  { label: "Distance recorded", num: true, cell: (v) => fmtKm(v.distance_recorded_km) },
];

export function render(page) {
  const vehicles = new Map();
  let vehiclesLoaded;
  const vehiclesReady = new Promise((resolve) => { vehiclesLoaded = resolve; });

  const vehiclesSection = section("Customer vehicles", "dealer-vehicles", async (body) => {
    try {
      const wrap = await pagedTable({
        caption: "Customer vehicles", columns: VEHICLE_COLUMNS, testid: "vehicles-table", rowTestid: "vehicle-row",
        rowId: (v) => v.vehicle_id, empty: "No customer has shared their vehicle's health with you.",
      }, async (cursor) => {
        const page = await api("/v1/dealer/vehicles", { query: { cursor, limit: 50 } });
        for (const v of page.items) vehicles.set(v.vehicle_id, v);
        return page;
      });
      body.append(wrap);
    } finally {
      vehiclesLoaded();
    }
  }, { intro: "Vehicles whose owners consented to share their health with you." });

  const funnelSection = section("Lead funnel", "dealer-funnel", async (body) => {
    const rows = await api("/v1/dealer/leads/funnel");
    body.append(table({
      caption: "Lead funnel per month and lead type", testid: "funnel-table", rowTestid: "funnel-row", rows,
      empty: "No leads yet.",
      columns: [
        { label: "Month", nowrap: true, cell: (r) => r.month },
        { label: "Lead type", cell: (r) => words(r.kind) },
        ...["created", "contacted", "appointment", "visited", "lost"].map((k) => ({
          label: k[0].toUpperCase() + k.slice(1), num: true, cell: (r) => String(r[k]),
        })),
        { label: "Conversion to visit", num: true, cell: (r) => fmtPercent(r.conversion_to_visit) },
      ],
    }));
  });

  const stateFilter = h("select", { id: "lead-state-filter", testid: "lead-state-filter" },
    h("option", { value: "" }, "all states"), STATES.map((st) => h("option", { value: st }, st)));
  const leadStatus = statusLine("leads-status");

  const leadsSection = section("Leads", "dealer-leads", async (body) => {
    await vehiclesReady;
    body.append(await pagedTable({
      caption: "Service and sales leads", testid: "leads-table", rowTestid: "lead-row", rowId: (l) => l.lead_id,
      empty: "No leads match.",
      columns: [
        { label: "Lead", cell: (l) => `#${l.lead_id}` },
        { label: "Vehicle", cell: (l) => {
          const v = vehicles.get(l.vehicle_id);
          const owner = v?.owner ? [h("br"), h("small", {}, v.owner.display_name)] : null;
          return [vehicleName(v ?? { vehicle_id: l.vehicle_id }), owner];
        } },
        { label: "Type", cell: (l) => words(l.kind) },
        { label: "Priority", num: true, cell: (l) => String(l.priority) },
        { label: "Reason", cell: (l) => l.reason },
        { label: "State", cell: (l) => [badge(l.state, `state-${l.state}`, { testid: "lead-state" }),
          l.lost_reason ? h("small", {}, ` (${words(l.lost_reason)})`) : null] },
        { label: "Created", nowrap: true, cell: (l) => fmtTime(l.created_at) },
        { label: "Actions", cell: (l) => leadActions(l) },
      ],
    }, (cursor) => api("/v1/dealer/leads", { query: { cursor, state: stateFilter.value, limit: 50 } })));
  });

  function leadActions(lead) {
    const errors = h("div", { class: "row-errors" });
    const move = async (button, change) => {
      button.disabled = true;
      errors.replaceChildren();
      try {
        const updated = await api(`/v1/dealer/leads/${lead.lead_id}`, { method: "PATCH", body: change });
        say(leadStatus, `Lead #${updated.lead_id} is now ${updated.state}.`);
        leadsSection.reload();
        funnelSection.reload();
      } catch (err) {
        errors.append(errorBox(err));
        button.disabled = false;
      }
    };
    const next = NEXT[lead.state] ?? [];
    if (!next.length && (lead.state === "visited" || lead.state === "lost")) {
      return h("span", { class: "muted" }, "closed");
    }
    const buttons = next.map((st) => {
      const b = h("button", { type: "button", class: "small", testid: `lead-action-${st}`,
        "aria-label": `Mark lead ${lead.lead_id} ${st}` }, words(st));
      b.addEventListener("click", () => move(b, { state: st }));
      return b;
    });
    const reasonId = `lost-reason-${lead.lead_id}`;
    const reason = h("select", { id: reasonId, testid: "lead-lost-reason" },
      LOST_REASONS.map((r) => h("option", { value: r }, words(r))));
    const lost = h("button", { type: "button", class: "small danger", testid: "lead-action-lost",
      "aria-label": `Mark lead ${lead.lead_id} lost` }, "lost");
    lost.addEventListener("click", () => move(lost, { state: "lost", lost_reason: reason.value }));
    return h("div", { class: "actions" }, buttons,
      h("span", { class: "lost-group" }, h("label", { for: reasonId, class: "visually-hidden" },
        `Why lead ${lead.lead_id} was lost`), reason, lost), errors);
  }

  const refresh = h("button", { type: "button", class: "secondary", testid: "leads-refresh" }, "Generate leads now");
  refresh.addEventListener("click", async () => {
    refresh.disabled = true;
    try {
      const out = await api("/v1/dealer/leads/refresh", { method: "POST" });
      say(leadStatus, `${out.created} new lead(s) from the latest analytics.`);
      leadsSection.reload();
      funnelSection.reload();
    } catch (err) {
      leadStatus.replaceChildren(errorBox(err));
    } finally {
      refresh.disabled = false;
    }
  });
  stateFilter.addEventListener("change", () => leadsSection.reload());

  // A plain link cannot send the bearer token: fetch the CSV and hand the browser the file.
  const csv = h("a", { href: "/v1/dealer/leads.csv", download: "leads.csv", class: "button secondary",
    testid: "leads-csv" }, "Export leads (CSV)");
  csv.addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const res = await api("/v1/dealer/leads.csv", { query: { state: stateFilter.value }, raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: "vinsight-leads.csv", hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      say(leadStatus, "Leads exported as CSV.");
    } catch (err) {
      leadStatus.replaceChildren(errorBox(err));
    }
  });

  const toolbar = h("div", { class: "toolbar" },
    h("label", { for: "lead-state-filter" }, "Show "), stateFilter, refresh, csv);
  leadsSection.querySelector("h2").after(toolbar, leadStatus);

  page.append(h("h1", {}, "Dealer dashboard"), vehiclesSection, leadsSection, funnelSection);
}
