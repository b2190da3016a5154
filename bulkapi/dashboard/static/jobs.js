// The tenant's jobs, newest first, with live progress for the ones still running.

import { TERMINAL, isLater } from "./api.js";
import { ago, badge, count, h, progressBar, statusLabel } from "./dom.js";
import { followJob } from "./events.js";

// Jobs read per page.
const PAGE = 25;
// Milliseconds between re-reads of the list (new jobs, and running ones not streamed).
const REFRESH_MS = 4000;
// Event streams open at once. Each holds one of the API's few wait slots per tenant and
// one of the browser's six connections to this server; the list refresh covers the rest.
const MAX_STREAMS = 3;
const STATUSES = ["queued", "processing", "succeeded", "partially_succeeded", "failed", "cancelled"];
// A short line from the job's metadata (the submitter's own labels), if it has any.
function labels(metadata) {
  if (!metadata || typeof metadata !== "object") return null;
  const shown = Object.entries(metadata)
    .filter(([, value]) => value === null || typeof value !== "object")
    .slice(0, 3)
    .map(([name, value]) => `${name}: ${value}`);
  return shown.length ? h("div", { className: "labels" }, shown.join(" · ")) : null;
}

// A count, highlighted only when it is not zero.
function tally(value, className) {
  return h("td", { className: value ? `num ${className}` : "num muted" }, count(value));
}

function jobRow(job) {
  return h(
    "tr",
    { dataset: { jobId: job.id, status: job.status } },
    h(
      "td",
      {},
      h("a", { className: "mono", href: `#job=${encodeURIComponent(job.id)}` }, job.id),
      labels(job.metadata),
    ),
    h("td", {}, badge(job.status)),
    h("td", { className: "wide" }, progressBar(job)),
    tally(job.counts.succeeded, "ok"),
    tally(job.counts.failed, "bad"),
    tally(job.counts.cancelled, ""),
    h("td", { className: "when" }, ago(job.created_at)),
  );
}

export class JobsView {
  constructor(api, onError) {
    this.api = api;
    this.onError = onError;
    this.jobs = [];
    this.nextCursor = null;
    this.status = "";
    this.streams = new Map();
  }

  mount(root) {
    this.controller = new AbortController();
    const filter = h(
      "select",
      { id: "job-status", onchange: () => this.filter(filter.value) },
      h("option", { value: "" }, "All statuses"),
      STATUSES.map((status) => h("option", { value: status }, statusLabel(status))),
    );
    this.body = h("tbody");
    this.empty = h("p", { className: "empty", hidden: true }, "No jobs yet. Submit one with POST /v1/bulk or bulkapi submit.");
    this.more = h("button", { type: "button", className: "button quiet", hidden: true, onclick: () => this.loadMore() }, "Show more");
    root.append(
      h(
        "section",
        { className: "card" },
        h(
          "div",
          { className: "card-head" },
          h("h1", {}, "Jobs"),
          h("label", { className: "inline" }, "Status ", filter),
        ),
        h(
          "div",
          { className: "table-wrap" },
          h(
            "table",
            { className: "jobs" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Job", "Status", "Progress", "Succeeded", "Failed", "Cancelled", "Created"].map((name) =>
                  h("th", { scope: "col" }, name),
                ),
              ),
            ),
            this.body,
          ),
        ),
        this.empty,
        h("div", { className: "card-foot" }, this.more),
      ),
    );
    this.refresh();
    this.timer = setInterval(() => document.hidden || this.refresh(), REFRESH_MS);
  }

  unmount() {
    clearInterval(this.timer);
    this.controller.abort();
  }

  filter(status) {
    this.status = status;
    this.jobs = [];
    for (const stream of this.streams.values()) stream.abort();
    this.streams.clear();
    this.refresh();
  }

  async refresh() {
    if (this.loading) return;
    this.loading = true;
    const status = this.status;
    try {
      const limit = Math.min(1000, Math.max(PAGE, this.jobs.length));
      const page = await this.api.jobs({ status, limit, signal: this.controller.signal });
      if (status !== this.status) return; // the filter changed meanwhile
      const known = new Map(this.jobs.map((job) => [job.id, job]));
      this.jobs = page.items.map((job) => {
        const shown = known.get(job.id);
        return shown && this.streams.has(job.id) && isLater(shown, job) ? shown : job;
      });
      this.nextCursor = page.next_cursor;
      this.render();
      this.follow();
    } catch (error) {
      if (!this.controller.signal.aborted) this.onError(error);
    } finally {
      this.loading = false;
    }
  }

  async loadMore() {
    try {
      const page = await this.api.jobs({ status: this.status, limit: PAGE, cursor: this.nextCursor });
      const known = new Set(this.jobs.map((job) => job.id));
      this.jobs.push(...page.items.filter((job) => !known.has(job.id)));
      this.nextCursor = page.next_cursor;
      this.render();
    } catch (error) {
      this.onError(error);
    }
  }

  render() {
    this.body.replaceChildren(...this.jobs.map(jobRow));
    this.empty.hidden = this.jobs.length > 0;
    this.more.hidden = !this.nextCursor;
  }

  update(job) {
    const index = this.jobs.findIndex((shown) => shown.id === job.id);
    if (index < 0 || !isLater(job, this.jobs[index])) return;
    this.jobs[index] = job;
    this.body.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`)?.replaceWith(jobRow(job));
  }

  // Opens event streams for the newest running jobs, up to MAX_STREAMS at once.
  follow() {
    for (const job of this.jobs) {
      if (this.streams.size >= MAX_STREAMS) return;
      if (TERMINAL.has(job.status) || this.streams.has(job.id)) continue;
      const stream = new AbortController();
      this.controller.signal.addEventListener("abort", () => stream.abort(), { once: true });
      this.streams.set(job.id, stream);
      followJob(this.api.secret, this.api.eventsPath(job.id), (event) => this.update(event), stream.signal)
        .catch((error) => this.onError(error))
        .finally(() => {
          if (this.streams.get(job.id) === stream) this.streams.delete(job.id);
        });
    }
  }
}
