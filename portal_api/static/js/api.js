// The portal API client: bearer token in sessionStorage, RFC 9457 problems turned into ApiError.

const TOKEN_KEY = "vinsight.token";
const WHO_KEY = "vinsight.who";

/** An API refusal or failure; `detail` is the problem's human-readable explanation. */
export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.problem = problem;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  /** The caller as /v1/whoami or /v1/me/whoami described them at sign-in. */
  get who() {
    try {
      return JSON.parse(sessionStorage.getItem(WHO_KEY) ?? "null");
    } catch {
      return null;
    }
  },
  save(token, who) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(WHO_KEY, JSON.stringify(who));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(WHO_KEY);
  },
};

/**
 * Call the API. `query` adds search parameters (null/empty skipped, arrays repeated), `body` sends
 * JSON, `form` sends application/x-www-form-urlencoded, `raw` returns the Response itself.
 * A 401 on an authenticated call signs the user out (the "vinsight:signed-out" event).
 */
export async function api(path, { method = "GET", query, body, form, raw = false, auth = true } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.append(key, String(v));
    }
  }
  const headers = { Accept: "application/json, application/problem+json" };
  if (auth && session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (form) {
    payload = new URLSearchParams(form);
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, `The portal cannot be reached (${err.message}).`);
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`.trim();
    let problem = null;
    try {
      problem = await response.json();
      if (problem && typeof problem.detail === "string" && problem.detail) detail = problem.detail;
    } catch {
      // not a problem document; keep the status line
    }
    if (response.status === 401 && auth) {
      session.clear();
      window.dispatchEvent(new CustomEvent("vinsight:signed-out", { detail }));
    }
    throw new ApiError(response.status, detail, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** Sign in and find out who we are: org staff answer /v1/whoami, drivers /v1/me/whoami. */
export async function signIn(email, password) {
  const { access_token: token } = await api("/v1/auth/token", {
    method: "POST", form: { username: email, password }, auth: false,
  });
  session.save(token, null);
  try {
    let who;
    try {
      who = await api("/v1/whoami");
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 403)) throw err;
      who = await api("/v1/me/whoami");
    }
    session.save(token, who);
    return who;
  } catch (err) {
    session.clear();
    throw err;
  }
}

let configPromise = null;

/** The web portal's settings (`map_tiles_url`), fetched once. */
export function webConfig() {
  configPromise ??= api("/config.json", { auth: false }).catch(() => ({ map_tiles_url: "" }));
  return configPromise;
}
