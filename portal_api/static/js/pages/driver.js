// The driver's view: my vehicles and their health, trips, score breakdown with tips, consents
// (grant, revoke) and who read my data.

import { api } from "../api.js";
import { componentBars } from "../charts.js";
import {
  SCOPE_LABELS, badge, errorBox, facts, fmtDate, fmtDuration, fmtKm, fmtNum, fmtSpeed, fmtTime, h, pagedTable, say,
  section, statusLine, table, words,
} from "../dom.js";

export const title = "My car";

function vehicleName(v) {
  return [v.make, v.model, v.model_year].filter(Boolean).join(" ") || `Vehicle ${v.vehicle_id}`;
}

function healthCard(v) {
  const svc = v.service;
  return h("article", { class: "vehicle", testid: "my-vehicle", "data-id": v.vehicle_id },
    h("h3", {}, vehicleName(v)),
    facts([
      ["VIN", h("span", { class: "mono" }, v.vin ?? "—")],
      ["Last seen", [fmtTime(v.last_seen), v.online ? [" ", badge("online", "ok")] : null]],
      ["Distance recorded", fmtKm(v.distance_recorded_km)],
      ["Engine warning light", v.mil_on ? badge("on", "bad", { testid: "mil-on" }) : badge("off", "ok")],
      ["Battery", v.battery ? [badge(v.battery.level ?? "unknown", v.battery.level === "ok" ? "ok" : "warn"),
        v.battery.resting_v ? ` resting ${v.battery.resting_v} V` : ""] : "—"],
      ["Service", svc ? [svc.due ? badge("due", "bad") : svc.due_soon ? badge("due soon", "warn") : badge("ok", "ok"),
        ` ${svc.reason}`] : "—"],
    ]),
    h("h4", {}, "Trouble codes"),
    v.open_dtcs.length
      ? h("ul", { class: "plain" }, v.open_dtcs.map((d) => h("li", { testid: "dtc", "data-code": d.code },
        h("code", {}, d.code), ` ${d.description} (since ${fmtDate(d.first_seen)})`)))
      : h("p", { class: "muted" }, "No open trouble codes."));
}

function tripsSection(vehicle) {
  return section(`Trips of the ${vehicleName(vehicle)}`, "my-trips", async (body) => {
    body.append(await pagedTable({
      caption: "My trips", testid: "trips-table", rowTestid: "trip-row", rowId: (t) => t.trip_id,
      empty: "No trips recorded yet.",
      columns: [
        { label: "Start", nowrap: true, cell: (t) => h("a", { href: `#/driver/trips/${t.trip_id}`, testid: "trip-link",
          "aria-label": `Trip of ${fmtTime(t.start_ts)}` }, fmtTime(t.start_ts)) },
        { label: "Distance", num: true, cell: (t) => fmtKm(t.distance_m / 1000) },
        { label: "Duration", num: true, cell: (t) => fmtDuration(t.duration_s) },
        { label: "Average speed", num: true, cell: (t) => fmtSpeed(t.avg_speed_kmh) },
        { label: "Score", num: true, cell: (t) => fmtNum(t.score) },
      ],
    }, (cursor) => api(`/v1/me/vehicles/${vehicle.vehicle_id}/trips`, { query: { cursor, limit: 20 } })));
  });
}

function scoreSection(vehicle) {
  return section("My driving score", "my-score", async (body) => {
    const sc = await api(`/v1/me/vehicles/${vehicle.vehicle_id}/score`);
    const comps = Object.entries(sc.components_30d);
    body.append(
      h("p", { class: "score" }, h("span", { class: "big", testid: "my-score-30d" }, fmtNum(sc.score_30d)),
        h("span", { class: "muted" }, ` / 100 over the last 30 days, ${fmtKm(sc.distance_km_30d)} driven`)),
      comps.length ? componentBars(comps.map(([k, v]) => ({ label: words(k), value: v })),
        { label: "Score components over 30 days", testid: "score-components-chart" }) : null,
      table({
        caption: "Score components", testid: "score-components", rowTestid: "score-component",
        rows: comps, empty: "No scored driving in the last 30 days.",
        columns: [
          { label: "Component", cell: ([k]) => words(k) },
          { label: "Sub-score", num: true, cell: ([, v]) => fmtNum(v) },
        ],
      }),
      h("h3", {}, "Tips"),
      h("ul", { testid: "score-tips" }, sc.tips.map((t) => h("li", {}, t))));
    const latest = sc.latest_day;
    const parts = latest?.explanation?.components ?? [];
    if (latest && parts.length) {
      body.append(h("h3", {}, `How the score of ${fmtDate(latest.period_start)} was made`),
        table({
          caption: "Latest day's score explanation", testid: "latest-day-components", rows: parts,
          columns: [
            { label: "Component", cell: (c) => words(c.name) },
            { label: "Sub-score", num: true, cell: (c) => fmtNum(c.sub_score) },
            { label: "Weight", num: true, cell: (c) => c.weight === undefined ? "—" : fmtNum(c.weight, 2) },
            { label: "Counted", cell: (c) => c.applied === false ? "no" : "yes" },
          ],
        }));
    }
  });
}

function consentState(c) {
  if (c.active) return badge("active", "ok");
  if (c.revoked_at) return badge(`revoked ${fmtDate(c.revoked_at)}`, "bad");
  if (c.expires_at && new Date(c.expires_at) <= new Date()) return badge(`expired ${fmtDate(c.expires_at)}`, "muted");
  return badge(`starts ${fmtDate(c.starts_at)}`, "warn");
}

function consentsSection() {
  const status = statusLine("consents-status");
  const sec = section("Who may use my data", "my-consents", async (body) => {
    const [consents, orgs] = await Promise.all([api("/v1/me/consents"), api("/v1/organisations")]);
    const revoke = async (c, button) => {
      button.disabled = true;
      try {
        const out = await api(`/v1/me/consents/${c.consent_id}`, { method: "DELETE" });
        say(status, `Consent for ${out.organisation} revoked: they can no longer read this data.`);
        sec.reload();
      } catch (err) {
        status.replaceChildren(errorBox(err));
        button.disabled = false;
      }
    };
    body.append(table({
      caption: "My consents", testid: "consents-table", rowTestid: "consent-row", rowId: (c) => c.consent_id,
      rows: consents, empty: "You have not shared your data with anyone.",
      columns: [
        { label: "Organisation", cell: (c) => [c.organisation, h("br"),
          h("small", { class: "muted" }, c.organisation_kind)] },
        { label: "Data", cell: (c) => c.scopes.map((sc) => SCOPE_LABELS[sc] ?? sc).join(", ") },
        { label: "Purpose", cell: (c) => c.purpose },
        { label: "From", nowrap: true, cell: (c) => fmtDate(c.starts_at) },
        { label: "Until", nowrap: true, cell: (c) => c.expires_at ? fmtDate(c.expires_at) : "until revoked" },
        { label: "Status", cell: (c) => consentState(c) },
        { label: "", cell: (c) => {
          if (c.revoked_at) return "";
          const b = h("button", { type: "button", class: "small danger", testid: "consent-revoke",
            "aria-label": `Revoke consent for ${c.organisation}` }, "Revoke");
          b.addEventListener("click", () => revoke(c, b));
          return b;
        } },
      ],
    }), grantForm(orgs, status, () => sec.reload()));
  }, { intro: "Organisations only see what you grant them here, for the purpose stated, until you revoke it." });
  sec.querySelector("h2").after(status);
  return sec;
}

function grantForm(orgs, status, done) {
  const org = h("select", { id: "grant-org", required: true, testid: "grant-org" },
    orgs.map((o) => h("option", { value: o.org_id }, `${o.name} (${o.kind})`)));
  const scopes = Object.entries(SCOPE_LABELS).map(([value, label]) => {
    const id = `grant-scope-${value}`;
    return h("div", { class: "check" }, h("input", { type: "checkbox", id, value, name: "scopes",
      testid: `grant-scope-${value}` }), h("label", { for: id }, label));
  });
  const purpose = h("input", { id: "grant-purpose", type: "text", required: true, minlength: 3, maxlength: 500,
    testid: "grant-purpose" });
  const expires = h("input", { id: "grant-expires", type: "date", testid: "grant-expires" });
  const errors = h("div");
  const submit = h("button", { type: "submit", testid: "grant-submit" }, "Grant");
  // The API validates (and its problem detail is shown): no second set of rules in the browser.
  const form = h("form", { class: "grant", testid: "grant-form", novalidate: true },
    h("h3", {}, "Share data with an organisation"),
    h("div", { class: "field" }, h("label", { for: "grant-org" }, "Organisation"), org),
    h("fieldset", {}, h("legend", {}, "Data to share"), scopes),
    h("div", { class: "field" }, h("label", { for: "grant-purpose" }, "Purpose"), purpose),
    h("div", { class: "field" }, h("label", { for: "grant-expires" }, "Expires on (optional)"), expires),
    errors, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    submit.disabled = true;
    const chosen = [...form.querySelectorAll("input[name=scopes]:checked")].map((i) => i.value);
    try {
      const out = await api("/v1/me/consents", { method: "POST", body: {
        org_id: Number(org.value), scopes: chosen, purpose: purpose.value.trim(),
        expires_at: expires.value ? `${expires.value}T00:00:00Z` : null,
      } });
      say(status, `${out.organisation} may now read: ${out.scopes.map((sc) => SCOPE_LABELS[sc] ?? sc).join(", ")}.`);
      done();
    } catch (err) {
      errors.append(errorBox(err));
      submit.disabled = false;
    }
  });
  return form;
}

function accessLogSection() {
  return section("Who read my data", "my-access-log", async (body) => {
    body.append(await pagedTable({
      caption: "Access log", testid: "access-log-table", rowTestid: "access-row",
      empty: "Nobody has read your data.",
      columns: [
        { label: "When", nowrap: true, cell: (r) => fmtTime(r.at) },
        { label: "Who", cell: (r) => r.who },
        { label: "Organisation", cell: (r) => r.organisation ?? "—" },
        { label: "Data", cell: (r) => SCOPE_LABELS[r.scope] ?? r.scope },
        { label: "Purpose", cell: (r) => r.purpose },
        { label: "What", cell: (r) => words(r.action) },
        { label: "Records", num: true, cell: (r) => String(r.records) },
      ],
    }, (cursor) => api("/v1/me/access-log", { query: { cursor, limit: 25 } })));
  }, { intro: "Every time an organisation reads your data it is logged here." });
}

export function render(page) {
  const perVehicle = h("div", { testid: "vehicle-detail" });
  const show = (vehicle) => perVehicle.replaceChildren(h("div", { class: "grid" }, tripsSection(vehicle),
    scoreSection(vehicle)));

  const vehicles = section("My vehicles", "my-vehicles", async (body) => {
    const list = await api("/v1/me/vehicles");
    if (!list.length) {
      body.append(h("p", { class: "muted" }, "No vehicle is registered to you."));
      return;
    }
    body.append(h("div", { class: "vehicles" }, list.map(healthCard)));
    if (list.length > 1) {
      const pick = h("select", { id: "vehicle-pick", testid: "vehicle-pick" },
        list.map((v) => h("option", { value: v.vehicle_id }, `${vehicleName(v)} (${v.vin ?? v.vehicle_id})`)));
      pick.addEventListener("change", () => show(list.find((v) => String(v.vehicle_id) === pick.value)));
      body.append(h("div", { class: "field inline" },
        h("label", { for: "vehicle-pick" }, "Show trips and score of"), pick));
    }
    show(list[0]);
  });

  page.append(h("h1", {}, "My car"), vehicles, perVehicle, consentsSection(), accessLogSection());
}
