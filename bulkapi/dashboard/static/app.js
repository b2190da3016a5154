// The dashboard: sign in with an API key (or a job's status token), then the tenant's
// jobs (#), or one job (#job=ID, with &results=STATUS for its results' filter).

import { Api, forgetCredential, loadCredential, saveCredential } from "./api.js";
import { h, notice } from "./dom.js";
import { JobView } from "./job.js";
import { JobsView } from "./jobs.js";

const main = document.getElementById("main");
const session = document.getElementById("session");
const banner = document.getElementById("banner");
// Milliseconds an error stays on screen: a failure that persists is reported again.
const BANNER_MS = 8000;
let view = null;
let bannerTimer = null;

function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { job: params.get("job"), results: params.get("results") ?? "" };
}

function rememberFilter(job, status) {
  const params = new URLSearchParams({ job });
  if (status) params.set("results", status);
  history.replaceState(null, "", `#${params}`);
}

function report(error) {
  if (error.status === 401) {
    forgetCredential();
    show("The API no longer accepts this credential: sign in again.");
    return;
  }
  banner.replaceChildren(notice(error.message));
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => banner.replaceChildren(), BANNER_MS);
}

// Status tokens start with jst_ (API keys with bk_): a token reads its one job only,
// so it needs that job's id; a key lists the tenant's jobs.
async function identify(secret, job) {
  const api = new Api(secret);
  if (secret.startsWith("jst_")) {
    if (!job) throw new Error("A status token reads one job only: enter that job's id too.");
    await api.job(job);
    return { secret, kind: "token", job };
  }
  await api.jobs({ limit: 1 });
  return { secret, kind: "key" };
}

function signInForm(message) {
  const secret = h("input", {
    id: "secret",
    name: "secret",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "bk_… or jst_…",
  });
  const job = h("input", { id: "job-id", name: "job", value: route().job ?? "", autocomplete: "off", spellcheck: "false", placeholder: "job_…" });
  const status = h("div", {}, message ? notice(message) : null);
  const submit = h("button", { type: "submit", className: "button primary" }, "Open dashboard");
  const form = h(
    "form",
    {
      className: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        try {
          const credential = await identify(secret.value.trim(), job.value.trim());
          saveCredential(credential);
          if (credential.kind === "key" && job.value.trim()) location.hash = `job=${encodeURIComponent(job.value.trim())}`;
          show();
        } catch (error) {
          const refused = error.status === 401 ? "This credential was refused." : error.message;
          status.replaceChildren(notice(refused));
          submit.disabled = false;
        }
      },
    },
    h("h1", {}, "Follow your bulk jobs"),
    h("p", { className: "muted" }, "Paste an API key to see your jobs, or a job's status token together with its job id to follow that one job."),
    h("label", { for: "secret" }, "API key or status token"),
    secret,
    h("label", { for: "job-id" }, "Job id ", h("span", { className: "muted" }, "(needed with a status token)")),
    job,
    status,
    submit,
    h("p", { className: "fine" }, "The credential stays in this browser tab (session storage) until you sign out or close the tab. It is sent only to this server, in the Authorization header."),
  );
  return form;
}

function sessionControls(credential) {
  const what = credential.kind === "key" ? "an API key" : "a job's status token";
  return [
    h("span", { className: "who" }, `Signed in with ${what}`),
    h(
      "button",
      {
        type: "button",
        className: "button quiet",
        onclick: () => {
          forgetCredential();
          show();
        },
      },
      "Sign out",
    ),
  ];
}

function show(message) {
  view?.unmount();
  view = null;
  banner.replaceChildren();
  main.replaceChildren();
  const credential = loadCredential();
  if (!credential) {
    session.replaceChildren();
    main.append(signInForm(message));
    document.getElementById("secret").focus();
    return;
  }
  session.replaceChildren(...sessionControls(credential));
  const api = new Api(credential.secret);
  const { job, results } = route();
  if (credential.kind === "token") {
    view = new JobView(api, credential.job, { canCancel: false, back: false, filter: results, onFilter: (status) => rememberFilter(credential.job, status) }, report);
  } else if (job) {
    view = new JobView(api, job, { canCancel: true, back: true, filter: results, onFilter: (status) => rememberFilter(job, status) }, report);
  } else {
    view = new JobsView(api, report);
  }
  view.mount(main);
}

window.addEventListener("hashchange", () => show());
show();
