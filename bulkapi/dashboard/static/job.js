// One job: its progress, status history and details, its results filtered by status,
// and (with an API key) a button that cancels what it has not applied yet.

import { TERMINAL, isLater } from "./api.js";
import { ago, badge, count, h, notice, progressBar, statusLabel, timeOf } from "./dom.js";
import { followJob } from "./events.js";

// Results read per page.
const PAGE = 50;
// Milliseconds between re-reads of the results' first page while the job runs.
const RESULTS_REFRESH_MS = 3000;
// The result filters: the API's operation statuses, and all of them.
const FILTERS = ["", "succeeded", "failed", "cancelled", "pending"];

function stat(label, value, className = "") {
  return h("div", { className: `stat ${className}` }, h("span", { className: "stat-value" }, count(value)), h("span", { className: "stat-label" }, label));
}

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function resultRow(result) {
  const error = result.error
    ? [h("code", {}, result.error.code), " ", h("span", { className: "muted" }, result.error.message)]
    : h("span", { className: "muted" }, "—");
  return h(
    "tr",
    { dataset: { index: result.index, status: result.status } },
    h("td", { className: "num" }, String(result.index)),
    h("td", {}, result.op),
    h("td", { className: "mono" }, `${result.type}/${result.id}`),
    h("td", {}, badge(result.status)),
    h("td", { className: "num" }, result.version === undefined ? "—" : String(result.version)),
    h("td", {}, result.effects_status ? badge(result.effects_status) : h("span", { className: "muted" }, "—")),
    h("td", { className: "error" }, error),
  );
}

export class JobView {
  // options: canCancel (an API key, not a status token), back (a link to the list),
  // filter (the results' status, "" for all) and onFilter(status) to remember it.
  constructor(api, jobId, options, onError) {
    this.api = api;
    this.jobId = jobId;
    this.options = options;
    this.onError = onError;
    this.filter = options.filter ?? "";
    this.results = [];
    this.nextCursor = null;
    this.resultsReadAt = 0;
  }

  mount(root) {
    this.controller = new AbortController();
    this.summary = h("section", { className: "card", "aria-live": "polite" }, h("p", { className: "muted" }, "Loading…"));
    this.tabs = h("div", { className: "tabs", role: "group", "aria-label": "Results by status" });
    this.resultBody = h("tbody");
    this.resultNote = h("p", { className: "empty", hidden: true }, "No results with this status.");
    this.more = h("button", { type: "button", className: "button quiet", hidden: true, onclick: () => this.loadResults(true) }, "Show more");
    root.append(
      this.options.back ? h("nav", { className: "crumbs" }, h("a", { href: "#" }, "← All jobs")) : null,
      this.summary,
      h(
        "section",
        { className: "card" },
        h("div", { className: "card-head" }, h("h2", {}, "Results"), this.tabs),
        h(
          "div",
          { className: "table-wrap" },
          h(
            "table",
            { className: "results" },
            h("thead", {}, h("tr", {}, ["#", "Op", "Resource", "Status", "Version", "Effects", "Error"].map((name) => h("th", { scope: "col" }, name)))),
            this.resultBody,
          ),
        ),
        this.resultNote,
        h("div", { className: "card-foot" }, this.more),
      ),
    );
    this.start();
  }

  unmount() {
    this.controller.abort();
  }

  async start() {
    const { signal } = this.controller;
    try {
      this.show(await this.api.job(this.jobId, { signal }));
      this.loadResults(false);
      if (TERMINAL.has(this.job.status)) return;
      await followJob(this.api.secret, this.api.eventsPath(this.jobId), (job) => this.show(job), signal);
    } catch (error) {
      if (!signal.aborted) this.onError(error);
    }
  }

  show(job) {
    if (this.job && !isLater(job, this.job)) return; // an event older than what is shown
    const wasOpen = this.job && !TERMINAL.has(this.job.status);
    this.job = job;
    this.summary.replaceChildren(...this.summaryOf(job));
    this.renderTabs();
    if (!wasOpen) return;
    // While it runs, the first page follows along (not pages the user asked for more of).
    const due = Date.now() - this.resultsReadAt >= RESULTS_REFRESH_MS && !this.nextPagesShown;
    if (TERMINAL.has(job.status) || due) this.loadResults(false);
  }

  summaryOf(job) {
    const history = h(
      "ol",
      { className: "timeline" },
      job.status_history.map((entry) => h("li", { dataset: { status: entry.status } }, badge(entry.status), " ", h("time", { datetime: entry.at }, timeOf(entry.at)))),
    );
    const details = h(
      "dl",
      { className: "details" },
      field("Created", ago(job.created_at)),
      field("Started", job.started_at ? timeOf(job.started_at) : "—"),
      field("Finished", job.finished_at ? timeOf(job.finished_at) : "—"),
      field("Deadline", job.deadline ? timeOf(job.deadline) : "none"),
      field("Callback", job.callback_url ? h("span", { className: "mono" }, job.callback_url) : "none"),
      job.metadata ? field("Metadata", h("pre", {}, JSON.stringify(job.metadata, null, 2))) : [],
    );
    return [
      h(
        "div",
        { className: "card-head" },
        h("h1", { className: "job-title" }, h("span", { className: "mono" }, job.id), " ", badge(job.status)),
        this.cancelControls(job),
      ),
      h("div", { className: "big-progress" }, progressBar(job)),
      h(
        "div",
        { className: "stats" },
        stat("operations", job.total),
        stat("pending", job.counts.pending),
        stat("succeeded", job.counts.succeeded, "ok"),
        stat("failed", job.counts.failed, "bad"),
        stat("cancelled", job.counts.cancelled),
      ),
      h(
        "div",
        { className: "columns" },
        h("div", {}, h("h2", {}, "Status history"), history),
        h("div", {}, h("h2", {}, "Details"), details),
      ),
      this.message ?? [],
    ];
  }

  cancelControls(job) {
    if (!this.options.canCancel || TERMINAL.has(job.status)) return h("span");
    if (!this.confirming) {
      return h("button", { type: "button", className: "button danger", onclick: () => this.confirm(true) }, "Cancel job");
    }
    return h(
      "div",
      { className: "confirm", role: "group" },
      h("span", {}, `Cancel the ${count(job.counts.pending)} operations not applied yet?`),
      h("button", { type: "button", className: "button danger", onclick: () => this.cancel() }, "Yes, cancel"),
      h("button", { type: "button", className: "button quiet", onclick: () => this.confirm(false) }, "Keep running"),
    );
  }

  confirm(asking) {
    this.confirming = asking;
    this.show(this.job);
  }

  async cancel() {
    this.confirming = false;
    try {
      this.show(await this.api.cancel(this.jobId));
    } catch (error) {
      this.message = notice(error.message);
      this.show(this.job);
    }
  }

  renderTabs() {
    const counts = this.job.counts;
    this.tabs.replaceChildren(
      ...FILTERS.map((status) =>
        h(
          "button",
          {
            type: "button",
            className: "tab",
            dataset: { filter: status || "all" },
            "aria-pressed": String(status === this.filter),
            onclick: () => this.setFilter(status),
          },
          status ? statusLabel(status) : "all",
          h("span", { className: "tab-count" }, count(status ? counts[status] : this.job.total)),
        ),
      ),
    );
  }

  setFilter(status) {
    this.filter = status;
    this.options.onFilter?.(status);
    this.renderTabs();
    this.loadResults(false);
  }

  // Reads the first page of results again (more=false), or the next one.
  async loadResults(more) {
    const status = this.filter;
    const cursor = more ? this.nextCursor : null;
    const read = (this.reads = (this.reads ?? 0) + 1);
    this.resultsReadAt = Date.now();
    try {
      const page = await this.api.results(this.jobId, { status, limit: PAGE, cursor, signal: this.controller.signal });
      if (read !== this.reads) return; // a later read (another filter, say) wins
      this.results = more ? [...this.results, ...page.items] : page.items;
      this.nextPagesShown = more;
      this.nextCursor = page.next_cursor;
      this.resultBody.replaceChildren(...this.results.map(resultRow));
      this.resultNote.hidden = this.results.length > 0;
      this.more.hidden = !this.nextCursor;
    } catch (error) {
      if (!this.controller.signal.aborted) this.onError(error);
    }
  }
}
