// The new patch job form (#/jobs/new) and its "Preview impact" (issue 24).
// Loaded before app.js, whose helpers (h, api, get, can, table, showError, route) it uses
// when called. Preview posts the form's job, exactly as Create would send it, to
// POST /patchjobs/simulate with compare=true: the control plane simulates it on the live
// fleet and creates nothing. Its answer, and any refusal, are drawn in the form as text.
"use strict";

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

// What the page itself could not read in the form (the server's refusals are ApiErrors).
class FormError extends Error {}

// "90", "90s", "15m", "12h", "1.5d" -> seconds; a plain message for anything else.
function parseDuration(label, text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$/.exec(text);
  if (!m) throw new FormError(`${label}: give a duration such as 90s, 15m or 12h (got "${text}")`);
  return Number(m[1]) * UNITS[m[2] || "s"];
}

function parseNumber(label, text) {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new FormError(`${label}: give a number (got "${text}")`);
  return n;
}

// A count ("2") or a share of the fleet ("25%"), as the rolling knobs take them.
const amount = (label, text) => (/%\s*$/.test(text) ? text.trim() : parseNumber(label, text));

function duration(s) {
  if (s === null || s === undefined) return "not finished";
  if (s >= 3600) return `${(s / 3600).toFixed(1)} h`;
  if (s >= 60) return `${(s / 60).toFixed(1)} min`;
  return `${Math.round(s)} s`;
}
const count = (n) => (Number.isInteger(n) ? String(n) : n.toFixed(1));

async function newJobView(view) {
  const [methods, fleets, profiles] = await Promise.all([get("/patchjobs/methods"), get("/fleets"), get("/profiles")]);
  const field = (id, label, attrs = {}, hint = "") => {
    const input = h("input", { id, name: id, autocomplete: "off", ...attrs });
    return [input, h("label", { for: id }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : "")];
  };
  const lists = [
    h("datalist", { id: "fleet-names" }, fleets.map((f) => h("option", { value: f.name }))),
    h("datalist", { id: "profile-names" }, profiles.map((p) => h("option", { value: p.name }, `${p.application} v${p.version}`))),
  ];
  const [name, nameL] = field("job-name", "Name", { placeholder: "Arena 2.0.5", required: true });
  const [fleet, fleetL] = field("job-fleets", "Fleets", { list: "fleet-names", placeholder: "arena-eu, arena-us" }, "comma-separated");
  const [env, envL] = field("job-env", "Environment", { placeholder: "prod" });
  const [app, appL] = field("job-app", "Application", { placeholder: "arena" });
  const [oldB, oldL] = field("job-old", "Old build (profile)", { list: "profile-names" }, "several: comma-separated");
  const [newB, newL] = field("job-new", "New build (profile)", { list: "profile-names" }, "paired with the old ones in order");
  const method = h("select", { id: "job-method" }, methods.map((m) => h("option", { value: m.id }, m.name)));
  const [start, startL] = field("job-start", "Start in", { placeholder: "now" }, "empty: at once; 2h: two hours from now (at least 5m)");
  const [deadline, deadlineL] = field("job-deadline", "Drain deadline", { placeholder: "12h" }, "bleed-off, A/B: players are kicked after it");
  const [notice, noticeL] = field("job-notice", "Notices before it", { placeholder: "10m, 1m" });
  const [unavail, unavailL] = field("job-max-unavailable", "Max unavailable", { placeholder: "1 or 25%" }, "rolling");
  const [surge, surgeL] = field("job-max-surge", "Max surge", { placeholder: "1 or 25%" }, "rolling");
  const [share, shareL] = field("job-canary-share", "Canary share", { placeholder: "0.1" }, "canary: share of instances first");
  const [arrivals, arrivalsL] = field("sim-arrivals", "Arrivals per second", { placeholder: "0.5" });
  const [session, sessionL] = field("sim-session", "Session length", { placeholder: "20m" }, "typical (median) session");
  const [runs, runsL] = field("sim-runs", "Runs", { type: "number", min: 1, max: 20, value: 5 }, "seeds for the p50/p90");

  // Naming a known fleet fills what it implies, where the engineer left it empty.
  fleet.addEventListener("change", () => {
    const f = fleets.find((x) => x.name === fleet.value.split(",")[0].trim());
    if (!f) return;
    if (!env.value) env.value = f.environment;
    if (!app.value) app.value = f.application;
    if (!oldB.value && f.profile) oldB.value = f.profile;
  });

  const names = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);
  const builds = () => {
    const olds = names(oldB.value), news = names(newB.value);
    if (olds.length !== news.length) throw new FormError(`Give as many new builds as old ones (${olds.length} old, ${news.length} new).`);
    return olds.length ? olds.map((o, i) => ({ old: o, new: news[i] })) : [{ old: "", new: "" }];
  };
  // The job body exactly as POST /patchjobs takes it; only what the form was given.
  const job = () => {
    const body = { name: name.value.trim(), environment: env.value.trim(), application: app.value.trim(),
                   method: Number(method.value), builds: builds(), fleets: names(fleet.value) };
    const drain = {}, rolling = {};
    if (deadline.value.trim()) drain.deadline_s = parseDuration("Drain deadline", deadline.value);
    if (notice.value.trim()) drain.notice_before_s = notice.value.split(",").map((t) => parseDuration("Notices before it", t));
    if (unavail.value.trim()) rolling.max_unavailable = amount("Max unavailable", unavail.value);
    if (surge.value.trim()) rolling.max_surge = amount("Max surge", surge.value);
    if (Object.keys(drain).length) body.drain = drain;
    if (Object.keys(rolling).length) body.rolling = rolling;
    if (share.value.trim()) body.canary = { share: parseNumber("Canary share", share.value) };
    if (start.value.trim()) body.scheduled_start = Math.round(Date.now() / 1000 + parseDuration("Start in", start.value));
    return body;
  };
  // An explicit player model when both fields are given, none (fitted) when neither.
  const players = () => {
    const a = arrivals.value.trim(), s = session.value.trim();
    if (!a && !s) return null;
    if (!a || !s) throw new FormError("Give both arrivals per second and a session length, or neither (the model is then fitted from the fleet's session history).");
    return { arrivals_per_s: [parseNumber("Arrivals per second", a)],
             sessions: [{ share: 1, median_s: parseDuration("Session length", s) }] };
  };

  const problem = h("div", { id: "form-error", class: "form-error", role: "alert", hidden: true });
  const result = h("div", { id: "preview" });
  const say = (err, doing = "preview") => {
    problem.hidden = !err;
    problem.replaceChildren();
    if (!err) return;
    // The server's refusal in its own words; a form the page could not read, in the page's.
    const lead = err instanceof ApiError ? "Refused: " : err instanceof FormError ? "Check the form: " : `Could not ${doing}: `;
    problem.append(h("b", {}, lead), err.plain || String(err.message || err));
    if (err.field === "players") problem.append(h("br"), "Fill in Arrivals per second and Session length under Player model to simulate with them.");
  };
  let asked = 0;  // only the latest preview is drawn
  const preview = h("button", { type: "button", id: "preview-impact", disabled: !can("read") }, "Preview impact");
  preview.addEventListener("click", async () => {
    const mine = ++asked;
    say(null);
    result.classList.remove("stale");
    result.replaceChildren(h("p", { class: "muted", id: "preview-busy" }, "Simulating on the live fleet…"));
    preview.disabled = true;
    try {
      const body = { job: job(), compare: true, runs: parseNumber("Runs", runs.value) };
      const p = players();
      if (p) body.players = p;
      const out = await api("POST", "/patchjobs/simulate", body);
      if (mine === asked) result.replaceChildren(...previewPanel(out));
    } catch (e) {
      if (mine === asked) { result.replaceChildren(); say(e); }
    } finally {
      preview.disabled = !can("read");
    }
  });
  const create = action("Create job", "admin", async () => {
    say(null);
    try {
      const made = await api("POST", "/patchjobs", job());
      location.hash = `#/jobs/${made.id}`;
    } catch (e) { say(e, "create"); }
  }, "primary");

  const form = h("form", { class: "card jobform", id: "job-form" },
    lists,
    h("fieldset", {}, h("legend", {}, "Job"), nameL, fleetL, envL, appL, oldL, newL,
      h("label", { for: "job-method" }, h("span", {}, "Method"), method), startL),
    h("fieldset", {}, h("legend", {}, "Method settings (empty: the defaults)"), deadlineL, noticeL, unavailL, surgeL, shareL),
    h("fieldset", {}, h("legend", {}, "Player model for the preview (empty: fitted from the fleet's last 7 days)"), arrivalsL, sessionL, runsL),
    problem,
    h("div", { class: "row" }, preview, create,
      h("span", { class: "muted" }, "Preview simulates the job on the live fleet and every method beside it; it creates nothing.")));
  form.addEventListener("submit", (ev) => ev.preventDefault());
  // A preview answers the form as it was: say so once the form changes.
  form.addEventListener("input", () => {
    if (!result.querySelector("#preview-model") || result.querySelector("#preview-stale")) return;
    result.classList.add("stale");
    result.prepend(h("p", { id: "preview-stale", class: "form-error" }, "The form changed since this preview: press Preview impact again."));
  });
  view.append(h("h1", {}, "New patch job"), form, result);
}

// The simulate answer (schemas.SimulateOut), every server string as text.
function previewPanel(out) {
  const est = out.estimate, first = est.first;
  const kicked = first.kicked_at_deadline + first.kicked_by_stop;
  const stat = (id, label, value, more = "") => h("div", { class: "stat" }, h("span", { class: "muted" }, label),
    h("b", { id }, value), more ? h("small", { class: "muted" }, more) : "");
  const regions = Object.entries(first.region_finish_s).sort((a, b) => a[1] - b[1]);
  const methods = out.methods.map((r) => {
    const row = [r.method_name, r.outcome_name || "not finished", duration(r.duration_s), r.moved_after_notice,
                 r.kicked_at_deadline + r.kicked_by_stop, r.peak_extra_instances,
                 r.reduced_capacity_s ? duration(r.reduced_capacity_s) : "—"];
    return row;
  });
  const compared = table(["method", "outcome", "duration", "moved after notice", "kicked", "peak extra instances", "reduced capacity"],
                         methods, [3, 4, 5]);
  compared.id = "preview-methods";
  // The job's own method is marked in the comparison.
  out.methods.forEach((r, i) => { if (r.method === first.method) compared.tBodies[0].rows[i].classList.add("chosen"); });
  const perRegion = table(["region", "last old instance stopped after"], regions.map(([r, s]) => [r, duration(s)]), [1]);
  perRegion.id = "preview-regions";
  return [
    h("h2", {}, "Preview impact"),
    h("p", { id: "preview-model", class: "note" }, "Player model: ", out.model.note,
      out.model.source === "explicit" ? " — the values given in the form." : " — the fleet's own history."),
    h("p", { id: "preview-summary" }, `${first.method_name} of ${first.selected} instances; ${out.fleet.instances} live instances, `,
      `${out.fleet.players} players online now; ${est.runs} simulated runs from seed ${out.seed}`,
      est.unfinished ? `; ${est.unfinished} not finished by the simulation's horizon` : "",
      first.starts_after_s ? `; it starts in ${duration(first.starts_after_s)} (its scheduled start), on the players there will be by then` : ""),
    h("div", { class: "stats card" },
      stat("preview-p50", "expected duration p50", duration(est.duration_p50_s)),
      stat("preview-p90", "duration p90", duration(est.duration_p90_s)),
      stat("preview-kicked", "players kicked", count(est.kicked_p50), `p90 ${count(est.kicked_p90)}; first run: ${first.kicked_at_deadline} at the deadline, ${first.kicked_by_stop} by a stop`),
      stat("preview-moved", "moved after notice", String(first.moved_after_notice), `${first.left_after_notice} left at a notice`),
      stat("preview-surge", "peak extra instances", String(first.peak_extra_instances),
        first.extra_slots_needed ? `${first.extra_slots_needed} beyond the hosts' slots (${first.hosts_over_slots.join(", ")})` : "within the hosts' slots"),
      stat("preview-reduced", "reduced capacity", first.reduced_capacity_s ? duration(first.reduced_capacity_s) : "none",
        first.reduced_capacity_s ? `down to ${Math.round(first.min_capacity_share * 100)}% of places` : "")),
    h("h2", {}, "When each region finishes (first run)"), perRegion,
    h("h2", {}, "Every method on this fleet (same players, same seed)"), compared,
  ];
}
