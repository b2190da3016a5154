// Calls to this server's own API with the credential typed into the page.
//
// The credential lives in sessionStorage: it is kept for this tab only and is gone when
// the tab closes. Every request is same-origin (fetch refuses anything else, and so
// does the page's Content-Security-Policy), sends the credential in the Authorization
// header only (never in a URL), and follows no redirect.

const STORAGE_KEY = "bulkapi.dashboard.credential";

// Statuses after which a job never changes.
export const TERMINAL = new Set(["succeeded", "partially_succeeded", "failed", "cancelled"]);

const RANK = { queued: 0, processing: 1 };

// Whether `a` is the same or a later state of a job than `b`: status ranks only rise and
// pending counts only fall, and a list read or a reply can be older than an event.
export function isLater(a, b) {
  const rank = (job) => RANK[job.status] ?? 2;
  if (rank(a) !== rank(b)) return rank(a) > rank(b);
  return a.counts.pending <= b.counts.pending;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `The API answered ${status}.`);
    this.status = status;
    this.code = problem?.code ?? null;
  }
}

// The stored credential: {secret, kind: "key" | "token", job: id of a token's job}.
export function loadCredential() {
  try {
    const found = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return found && typeof found.secret === "string" ? found : null;
  } catch {
    return null;
  }
}

export function saveCredential(credential) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credential));
}

export function forgetCredential() {
  sessionStorage.removeItem(STORAGE_KEY);
}

// fetch() restricted to this origin's /v1 paths, with the credential as a bearer token.
export function request(secret, path, { method = "GET", headers = {}, signal } = {}) {
  if (!path.startsWith("/v1/")) {
    throw new Error(`not an API path: ${path}`);
  }
  return fetch(path, {
    method,
    signal,
    mode: "same-origin",
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
    referrerPolicy: "no-referrer",
    headers: { Accept: "application/json", ...headers, Authorization: `Bearer ${secret}` },
  });
}

export async function problemOf(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not a problem document: the status says enough
  }
  return new ApiError(response.status, problem);
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

// The API's job endpoints, for one credential.
export class Api {
  constructor(secret) {
    this.secret = secret;
  }

  async json(path, options) {
    const response = await request(this.secret, path, options);
    if (!response.ok) throw await problemOf(response);
    return response.json();
  }

  jobs({ status, limit, cursor, signal } = {}) {
    return this.json(`/v1/jobs${query({ status, limit, cursor })}`, { signal });
  }

  job(id, { signal } = {}) {
    return this.json(jobPath(id), { signal });
  }

  results(id, { status, limit, cursor, signal } = {}) {
    return this.json(`${jobPath(id)}/results${query({ status, limit, cursor })}`, { signal });
  }

  cancel(id) {
    return this.json(`${jobPath(id)}/cancel`, { method: "POST" });
  }

  eventsPath(id) {
    return `${jobPath(id)}/events`;
  }
}
