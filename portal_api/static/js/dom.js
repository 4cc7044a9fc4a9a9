// Small DOM helpers. Data always goes in as text nodes or attributes, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "style") {
      el.style.cssText = value;  // through the CSSOM: allowed under a strict Content-Security-Policy
    } else if (key === "testid") {
      el.setAttribute("data-testid", value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: h("td", { class: "num", testid: "x" }, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// --- formatting ---------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

/** ISO timestamp → "2026-11-20 08:12" in the browser's time zone. */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtDate(iso) {
  return iso ? fmtTime(iso).slice(0, 10) : "—";
}

export function fmtNum(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  return Number(value).toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtKm(km, digits = 1) {
  return km === null || km === undefined ? "—" : `${fmtNum(km, digits)} km`;
}

export function fmtSpeed(kmh) {
  return kmh === null || kmh === undefined ? "—" : `${fmtNum(kmh, 0)} km/h`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const m = Math.round(Number(seconds) / 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${pad(m % 60)} min` : `${m} min`;
}

export function fmtPercent(share) {
  return share === null || share === undefined ? "—" : `${Math.round(Number(share) * 100)} %`;
}

/** "harsh_braking" → "harsh braking". */
export function words(code) {
  return code ? String(code).replaceAll("_", " ") : "—";
}

export const SCOPE_LABELS = {
  vehicle_health: "Vehicle health",
  service_contact: "Service contact",
  driving_score: "Driving score",
  mileage: "Mileage",
  trip_summary: "Trip summaries",
  location_history: "Location history",
};

// --- building blocks -------------------------------------------------------------------------------

/** An API error for the user: the problem's detail, with the status for tests and screen readers. */
export function errorBox(err) {
  const status = err?.status ?? "";
  return h("p", { class: "error", role: "alert", testid: "error", "data-status": status },
    status ? h("strong", {}, `Error ${status}: `) : null, err?.detail ?? err?.message ?? String(err));
}

/** A polite live region for "lead moved", "consent revoked" and the like. */
export function statusLine(testid) {
  return h("p", { class: "status", role: "status", "aria-live": "polite", testid });
}

export function say(el, text, kind = "ok") {
  el.className = `status ${kind}`;
  el.textContent = text;
}

let sectionCount = 0;

/**
 * A titled section whose body `load(body)` fills; shows "Loading…", then the content or the API
 * error. `data-state` is loading / ready / error so tests can wait for it.
 */
export function section(title, testid, load, { level = "h2", intro = null } = {}) {
  const id = `section-${++sectionCount}`;
  const body = h("div", { class: "section-body" }, h("p", { class: "muted" }, "Loading…"));
  const el = h("section", { class: "card", testid, "aria-labelledby": id, "data-state": "loading" },
    h(level, { id }, title), intro ? h("p", { class: "muted" }, intro) : null, body);
  el.reload = async () => {
    el.dataset.state = "loading";
    const fresh = h("div", { class: "section-body" });
    try {
      await load(fresh);
      body.replaceChildren(...fresh.childNodes);
      el.dataset.state = "ready";
    } catch (err) {
      body.replaceChildren(errorBox(err));
      el.dataset.state = "error";
      if (!(err?.name === "ApiError")) console.error(err);
    }
  };
  el.reload();
  return el;
}

function cellClass(column) {
  return [column.num ? "num" : "", column.nowrap ? "nowrap" : ""].join(" ").trim() || null;
}

/**
 * A table. columns: [{ label, cell: (row) => node | text, num: bool, nowrap: bool }]; rows get
 * data-testid = rowTestid and data-id = rowId(row) when given.
 */
export function table({ caption, columns, rows, testid, rowTestid, rowId, empty = "Nothing to show." }) {
  const tbody = h("tbody");
  const render = (items) => {
    for (const row of items) {
      tbody.append(h("tr", { testid: rowTestid, "data-id": rowId ? rowId(row) : null },
        columns.map((c) => h("td", { class: cellClass(c) }, c.cell(row)))));
    }
  };
  render(rows);
  const emptyNote = h("p", { class: "muted", testid: testid ? `${testid}-empty` : null }, empty);
  const wrap = h("div", { class: "table-wrap" },
    h("table", { testid },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: cellClass(c) }, c.label)))),
      tbody),
    rows.length ? null : emptyNote);
  wrap.addRows = (items) => {
    if (items.length) emptyNote.remove();
    render(items);
  };
  return wrap;
}

/**
 * A table over a cursor-paginated endpoint: fetchPage(cursor) → { items, next_cursor }; a "Load
 * more" button fetches the next page. Resolves once the first page is in.
 */
export async function pagedTable(options, fetchPage) {
  const first = await fetchPage(null);
  const wrap = table({ ...options, rows: first.items });
  let cursor = first.next_cursor;
  const more = h("button", { type: "button", class: "secondary", testid: `${options.testid}-more` }, "Load more");
  const place = h("div", { class: "more" });
  more.addEventListener("click", async () => {
    more.disabled = true;
    place.querySelector(".error")?.remove();
    try {
      const page = await fetchPage(cursor);
      wrap.addRows(page.items);
      cursor = page.next_cursor;
      if (!cursor) more.remove();
    } catch (err) {
      place.append(errorBox(err));
    } finally {
      more.disabled = false;
    }
  });
  if (cursor) place.append(more);
  wrap.append(place);
  wrap.items = first.items;
  return wrap;
}

/** A definition list from [label, value] pairs (null values skipped). */
export function facts(pairs, attrs = {}) {
  return h("dl", { class: "facts", ...attrs },
    pairs.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function badge(text, kind = "", attrs = {}) {
  return h("span", { class: `badge ${kind}`.trim(), ...attrs }, text);
}
