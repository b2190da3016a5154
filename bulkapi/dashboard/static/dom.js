// Building the page from data with the DOM (never innerHTML: job metadata, ids and
// error messages are shown as text, whatever they contain).

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "className" || name === "textContent" || name === "value") {
      element[name] = value;
    } else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
const NUMBER = new Intl.NumberFormat();
const UNITS = [
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

export const count = (n) => NUMBER.format(n);

export function timeOf(iso) {
  return iso ? WHEN.format(new Date(iso)) : "—";
}

// "3 minutes ago", with the exact time as a tooltip.
export function ago(iso) {
  if (!iso) return h("span", { className: "muted" }, "—");
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const [unit, size] = UNITS.find(([, step]) => Math.abs(seconds) >= step) ?? UNITS[3];
  return h("time", { datetime: iso, title: timeOf(iso) }, RELATIVE.format(Math.round(seconds / size), unit));
}

export const statusLabel = (status) => status.replaceAll("_", " ");

export function badge(status) {
  return h("span", { className: `badge badge-${status}`, dataset: { status } }, statusLabel(status));
}

// Operations no longer pending, as a whole percentage (100 only when none is pending).
export function percentDone(job) {
  const done = job.total - job.counts.pending;
  return job.counts.pending ? Math.min(99, Math.floor((100 * done) / job.total)) : 100;
}

export function progressBar(job) {
  const percent = percentDone(job);
  const done = job.total - job.counts.pending;
  const fill = h("span", { className: `progress-fill progress-${job.status}` });
  fill.style.width = `${percent}%`; // CSSOM, not a style attribute: allowed by the CSP
  return h(
    "div",
    { className: "progress", dataset: { percent } },
    h(
      "div",
      {
        className: "progress-track",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
      },
      fill,
    ),
    h("span", { className: "progress-text" }, h("strong", { className: "percent" }, `${percent}%`), ` ${count(done)} / ${count(job.total)}`),
  );
}

export function notice(message, kind = "error") {
  return h("div", { className: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}
