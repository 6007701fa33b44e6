// Changeover dashboard: a hash-routed single page over the JSON API, no build step.
// The token lives in sessionStorage (this tab only) and goes out as a Bearer header; the API
// decides what it may do. Buttons a scope may not use are disabled, and if one is used
// anyway the API's refusal (403) is shown. Every value is put in the page as text, never HTML.
"use strict";

const TOKEN = "changeover.token";
const WHO = "changeover.who";
const PERMS = { viewer: ["read"], ci: ["read", "push"], agent: ["read", "agent"],
                admin: ["read", "push", "agent", "admin"] };
const PALETTE = ["#2454d6", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#2c3e50", "#d4ac0d", "#7f8c8d"];
const PAGE = 100;
let viewAbort = new AbortController();  // aborted when the route changes: stops streams and timers

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body && body.error ? body.error : "error"}: ${body && body.message ? body.message : "request failed"}`);
    this.status = status;
    this.plain = body && body.message ? body.message : this.message;  // the server's words alone
    this.field = body && body.field ? body.field : null;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch("/api/v1" + path, { method, headers, signal: viewAbort.signal,
                                            body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (!r.ok) {
    const err = new ApiError(r.status, data);
    if (r.status === 401) logout(err.message);
    throw err;
  }
  return data;
}
const get = (path) => api("GET", path);
const can = (perm) => (PERMS[(JSON.parse(sessionStorage.getItem(WHO) || "{}")).scope] || []).includes(perm);

// -- small DOM helpers -----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const link = (href, text) => h("a", { href }, text);
const slug = (s) => String(s).replace(/[^A-Za-z0-9]+/g, "-");
const badge = (text) => h("span", { class: "badge s-" + slug(text) }, text);
function table(head, rows, numeric = []) {
  return h("table", {}, h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { class: numeric.includes(i) ? "num" : null }, c)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: numeric.includes(i) ? "num" : null }, c))))
                                : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "none"))));
}
function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function showError(err) {
  const box = document.getElementById("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

// A button for an action that needs a permission: disabled (with the reason) for a scope
// without it. A refusal from the API is shown all the same.
function action(label, perm, run, cls = "") {
  const allowed = can(perm);
  const b = h("button", { type: "button", class: cls, disabled: !allowed, "data-needs": perm,
                          title: allowed ? null : `needs a token that may ${perm}` }, label);
  b.addEventListener("click", async () => {
    showError(null);
    b.disabled = true;
    try { await run(); } catch (e) { showError(e); } finally { b.disabled = !can(perm) || b.dataset.on === "false"; }
  });
  return b;
}

// -- log-in ----------------------------------------------------------------------------------

function logout(reason) {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(WHO);
  location.hash = "#/login";
  if (reason) setTimeout(() => showError(reason), 0);
}

function loginView(view) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "cho_…" });
  const form = h("form", { class: "card login" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Paste an access token (changeover token create). It stays in this tab only."),
    input, h("button", { class: "primary", type: "submit" }, "Log in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN, input.value.trim());
    try {
      sessionStorage.setItem(WHO, JSON.stringify(await get("/whoami")));
      showError(null);
      location.hash = "#/images";
    } catch (e) {
      sessionStorage.removeItem(TOKEN);
      showError(e);
    }
  });
  view.append(form);
  input.focus();
}

// -- images, versions, branches, diffs -------------------------------------------------------

async function imagesView(view) {
  const images = await get("/images");
  view.append(h("h1", {}, "Images"), table(["image", "current version", "locked by diff", "created"],
    images.map((i) => [link(`#/images/${encodeURIComponent(i.name)}`, i.name), i.current_version ?? "—",
                       i.locked_by_diff ? link(`#/diffs/${i.locked_by_diff}`, `diff ${i.locked_by_diff}`) : "", when(i.created_at)])));
}

async function imageView(view, name) {
  const e = encodeURIComponent(name);
  const [image, versions, branches] = await Promise.all([get(`/images/${e}`), get(`/images/${e}/versions`), get(`/images/${e}/branches`)]);
  view.append(h("h1", {}, `Image ${image.name}`),
    image.locked_by_diff ? h("p", {}, "Locked by ", link(`#/diffs/${image.locked_by_diff}`, `diff analysis ${image.locked_by_diff}`), ": accept or reject it.") : "",
    h("h2", {}, "Versions"),
    table(["version", "label", "status", "files", "bytes", "diff analysis", "created", "by"],
      versions.map((v) => [v.number, v.label ?? "", badge(v.status_name), v.file_count, bytes(v.total_bytes),
                           v.diff_id ? link(`#/diffs/${v.diff_id}`, `diff ${v.diff_id}`) : "", when(v.created_at), v.created_by]), [3, 4]),
    h("h2", {}, "Branches"),
    table(["branch", "version", "label", "moved", "by", ""],
      branches.map((b) => [b.name, b.version, b.label ?? "", when(b.updated_at), b.updated_by,
                           link(`#/images/${e}/branches/${encodeURIComponent(b.name)}`, "history")])));
  const branch = h("input", { id: "branch-name", placeholder: "production", size: 14 });
  const version = h("input", { id: "branch-version", placeholder: "latest", size: 10 });
  view.append(h("div", { class: "card row" }, "Point branch", branch, "at version", version,
    action("Set branch", "admin", async () => {
      await api("PUT", `/images/${e}/branches/${encodeURIComponent(branch.value.trim())}`, { version: version.value.trim() || "latest" });
      route();
    }, "primary")));
}

async function branchView(view, name, branch) {
  const rows = await get(`/images/${encodeURIComponent(name)}/branches/${encodeURIComponent(branch)}/history`);
  view.append(h("h1", {}, `${name} · branch ${branch}`), table(["from version", "to version", "by", "at"],
    rows.map((r) => [r.from_version ?? "—", r.to_version, r.actor, when(r.at)])));
}

async function diffView(view, id) {
  const d = await get(`/diffs/${id}`);
  view.append(h("h1", {}, `Diff analysis ${d.id} `, badge(d.status_name)),
    h("p", { class: "muted" }, `update ${d.update_id} · created ${when(d.created_at)} by ${d.created_by}`, d.decision ? ` · ${d.decision}` : ""),
    d.error ? h("p", { class: "card" }, d.error) : "");
  const r = d.report;
  if (r) {
    view.append(h("div", { class: "card row" },
      h("span", {}, "old build ", h("b", {}, bytes(r.old_bytes))), h("span", {}, "new build ", h("b", {}, bytes(r.new_bytes))),
      r.published_download_bytes == null
        ? h("span", {}, "download for a host on the current version: at most ", h("b", { id: "download-bytes" }, bytes(r.download_bytes)), " (whole files; accepting builds patches)")
        : h("span", {}, "download for a host on the base version, with the published patches ", h("b", { id: "download-bytes" }, bytes(r.published_download_bytes)), ` (whole files ${bytes(r.download_bytes)})`)),
    table(["change", "files", "bytes"], Object.entries(r.totals).map(([k, v]) => [k, v.files, bytes(v.bytes)]), [1, 2]),
    h("h2", {}, "Files"),
    table(["path", "change", "old size", "new size"], r.files.slice(0, 1000).map((f) => [f.path, badge(f.change), bytes(f.old_size), bytes(f.new_size)]), [2, 3]),
    r.files.length > 1000 ? h("p", { class: "muted" }, `first 1,000 of ${r.files.length} changed files`) : "");
  }
  if (d.status === 5 && !d.decision) {
    view.append(h("div", { class: "card row" },
      action("Accept (new version)", "push", async () => { await api("POST", `/diffs/${id}/accept`); route(); }, "primary"),
      action("Reject", "push", async () => { await api("POST", `/diffs/${id}/reject`); route(); }, "danger")));
  }
}

// -- fleets ----------------------------------------------------------------------------------

async function fleetsView(view) {
  const fleets = await get("/fleets");
  view.append(h("h1", {}, "Fleets"), table(["fleet", "application", "environment", "active profile", "instances", "hosts"],
    fleets.map((f) => [link(`#/fleets/${encodeURIComponent(f.name)}`, f.name), f.application, f.environment, f.profile ?? "—",
                       Object.entries(f.instances).map(([k, v]) => `${v} ${k}`).join(", "), f.hosts.length])));
}

function versionColours(profiles) {
  const out = {};
  profiles.forEach((p, i) => { out[p.profile] = PALETTE[i % PALETTE.length]; });
  return out;
}

async function fleetView(view, name) {
  const e = encodeURIComponent(name);
  const summary = await get(`/fleets/${e}/summary`);
  const colour = versionColours(summary.profiles);
  view.append(h("h1", {}, `Fleet ${name}`),
    h("p", {}, h("b", { id: "fleet-total" }, summary.instances), " instances, ", h("b", {}, summary.players), " players"),
    h("div", { class: "card row" }, summary.profiles.map((p) => h("span", {}, h("span", { class: "swatch", style: { background: colour[p.profile] } }),
      `${p.profile} (v${p.version}${p.label ? " " + p.label : ""}): ${p.instances} instances, ${p.players} players`)),
      h("span", { class: "muted" }, "pattern = state: striped starting, outlined allocated, faded draining/stopping, hatched failed")));
  view.append(table(["region", "instances", "players", "by version and state"], summary.regions.map((r) => [
    r.region, r.instances, `${r.players} / ${r.capacity}`,
    h("div", { class: "bar", "data-region": r.region }, r.groups.map((g) => h("span", {
      class: "st-" + g.state, title: `${g.profile} v${g.version} ${g.state}: ${g.instances}`,
      style: { background: colour[g.profile], flexGrow: g.instances } })))]), [1, 2]));
  const chart = h("div", {});
  view.append(h("h2", {}, "Instances"), await instancePager(e, summary, colour), h("h2", {}, "Players per version (last hour)"), chart);
  drawPlayers(chart, `?fleet=${e}`).catch(showError);
}

// A trial's instance runs the update it tries, not its profile's version.
function built(i) { return i.trial_id == null ? `v${i.version}` : `trial ${i.trial_id}: an update's build`; }

async function instancePager(e, summary, colour) {
  const box = h("div", {});
  const filters = { region: h("select", {}, h("option", { value: "" }, "all regions"), summary.regions.map((r) => h("option", {}, r.region))),
                    state: h("select", {}, h("option", { value: "" }, "all states"), summary.states.map((s) => h("option", {}, s))) };
  let offset = 0;
  const body = h("div", {});
  async function load() {
    const q = new URLSearchParams({ limit: PAGE, offset });
    for (const [k, sel] of Object.entries(filters)) if (sel.value) q.set(k, sel.value);
    const page = await get(`/fleets/${e}/instance-page?${q}`);
    const last = Math.min(offset + PAGE, page.total);
    body.replaceChildren(
      h("div", { class: "pager" }, action("‹ previous", "read", () => { offset = Math.max(0, offset - PAGE); return load(); }),
        h("span", { id: "page-info" }, page.total ? `${offset + 1}–${last} of ${page.total}` : "no instances"),
        action("next ›", "read", () => { if (last < page.total) offset += PAGE; return load(); })),
      h("div", { class: "dots" }, page.instances.map((i) => h("span", { class: "st-" + i.state, title: `#${i.id} ${i.host} ${built(i)} ${i.state}`,
                                                                     style: { background: colour[i.profile] || "#999" } }))),
      table(["id", "host", "region", "version", "state", "players", "port", "labels"], page.instances.map((i) => [
        i.id, i.host, i.region, h("span", {}, h("span", { class: "swatch", style: { background: colour[i.profile] || "#999" } }), `${i.profile} (${built(i)})`),
        h("span", {}, badge(i.state), i.allocated ? " allocated" : i.reserved ? " reserved" : ""), `${i.players} / ${i.capacity}`, i.port ?? "",
        Object.entries(i.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")]), [5]));
  }
  for (const sel of Object.values(filters)) sel.addEventListener("change", () => { offset = 0; load().catch(showError); });
  box.append(h("div", { class: "row" }, "Filter", filters.region, filters.state), body);
  await load();
  return box;
}

// -- players chart (inline SVG) --------------------------------------------------------------

async function playersView(view) {
  const chart = h("div", {});
  const windows = { "last 15 minutes": 900, "last hour": 3600, "last day": 86400 };
  const pick = h("select", { id: "window" }, Object.entries(windows).map(([label, s]) => h("option", { value: s, selected: s === 3600 }, label)));
  pick.addEventListener("change", () => drawPlayers(chart, "", Number(pick.value)).catch(showError));
  view.append(h("h1", {}, "Allocations and players per version"),
    h("p", { class: "row muted" }, "All fleets, from the sessions table:", pick), chart);
  await drawPlayers(chart, "", 3600);
}

async function drawPlayers(box, query, windowS = 3600) {
  const data = await get(`/stats/players${query}${query ? "&" : "?"}window_s=${windowS}&buckets=30`);
  const colour = versionColours(data.series);
  const legend = h("div", { class: "row" }, data.series.map((s) => h("span", {},
    h("span", { class: "swatch", style: { background: colour[s.profile] } }), `${s.profile} (v${s.version})`)));
  const step = data.step_s >= 3600 ? `${data.step_s / 3600} hours` : `${data.step_s / 60} minutes`;
  box.replaceChildren(legend, h("h2", {}, "Players"), lineChart(data, "players", colour),
                      h("h2", {}, `Allocations per ${step}`), lineChart(data, "allocations", colour));
}

function lineChart(data, key, colour) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 800, H = 220, L = 40, B = 24, n = data.ends.length;
  const max = Math.max(1, ...data.series.flatMap((s) => s[key]));
  const x = (i) => L + (i * (W - L - 10)) / Math.max(1, n - 1);
  const y = (v) => H - B - (v * (H - B - 10)) / max;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("data-series", key);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
  };
  add("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#ccc" });
  add("text", { x: 4, y: 14 }, String(max));
  add("text", { x: 4, y: H - B }, "0");
  add("text", { x: L, y: H - 6 }, clock(data.start));
  add("text", { x: W - 70, y: H - 6 }, clock(data.ends[n - 1]));
  for (const s of data.series) {
    add("polyline", { fill: "none", stroke: colour[s.profile], "stroke-width": 2,
                      points: s[key].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") });
  }
  return svg;
}

// -- patch jobs ------------------------------------------------------------------------------

async function jobsView(view, params) {
  const offset = Number(params.get("offset") || 0);
  const page = await get(`/patchjobs?limit=50&offset=${offset}`);
  view.append(h("h1", {}, "Patch jobs"), h("p", {}, link("#/jobs/new", "New job (preview its impact first)")), table(["job", "name", "application", "method", "status", "progress", "start"],
    page.jobs.map((j) => [link(`#/jobs/${j.id}`, `#${j.id}`), j.name, j.application, j.method_name, badge(j.status_name),
                          progressText(j.progress), when(j.start_at)])),
    h("div", { class: "pager" }, offset > 0 ? link(`#/jobs?offset=${Math.max(0, offset - 50)}`, "‹ newer") : "",
      h("span", {}, `${page.total} jobs`), offset + 50 < page.total ? link(`#/jobs?offset=${offset + 50}`, "older ›") : ""));
}

function progressText(p) {
  if (!p || !p.total) return "";
  return `${(p.by_state && p.by_state.new) || 0} / ${p.total} on the new build`;
}

const PAUSED = 5, TERMINAL = 7;  // patchjobs.states.JobStatus

async function jobView(view, id) {
  const head = h("div", {});
  const timeline = h("ul", { class: "timeline", id: "timeline" });
  const live = h("span", { id: "live", class: "live off" }, "connecting…");
  // The buttons are made once and only switched on and off as the job changes, so a
  // live update never swaps a button from under the operator's pointer.
  const cancel = (mode, question) => async () => {
    if (confirm(question)) await api("POST", `/patchjobs/${id}/cancel`, { mode });
  };
  const buttons = {
    resume: action("Resume", "admin", () => api("POST", `/patchjobs/${id}/resume`), "primary"),
    revert: action("Cancel and revert", "admin",
                   cancel("revert", "Cancel this job and move every instance back to the old build?"), "danger"),
    wrap: action("Cancel and wrap up", "admin",
                 cancel("wrap_up", "Cancel this job and leave every instance as it is now?"), "danger"),
  };
  const members = h("div", { id: "job-instances" });
  view.append(head, h("div", { class: "card row" }, Object.values(buttons)), members, h("h2", {}, "Timeline ", live), timeline);
  let asked = 0;  // only the answer to the latest request is drawn
  const render = (job) => {
    head.replaceChildren(...jobHeader(job));
    const mine = ++asked;
    get(`/patchjobs/${id}/instances?limit=${PAGE}`).then((page) => {
      if (mine === asked) members.replaceChildren(...jobInstances(page));
    }).catch((e) => { if (e instanceof ApiError) showError(e); });
    const open = job.status < TERMINAL && !job.cancel;
    enable(buttons.resume, job.status === PAUSED && !job.cancel);
    enable(buttons.revert, open);
    enable(buttons.wrap, open);
  };
  render(await get(`/patchjobs/${id}`));
  follow(id, render, (ev) => timeline.prepend(h("li", { "data-kind": ev.kind }, h("time", {}, clock(ev.at)), badge(ev.kind), h("span", {}, ev.message))), live);
}

// Switches an action button on or off for the job's state (never on for a scope without
// the permission); touches the button only when that changes.
function enable(button, on) {
  if (button.dataset.on === String(on)) return;
  button.dataset.on = String(on);
  button.disabled = !on || !can(button.dataset.needs);
}

function jobHeader(job) {
  const p = job.progress || {};
  const done = (p.by_state && p.by_state.new) || 0;
  return [
    h("h1", {}, `Patch job #${job.id} ${job.name} `, h("span", { id: "job-status" }, badge(job.status_name))),
    h("p", { class: "muted" }, `${job.method_name} · ${job.application} in ${job.environment} · phase `, h("b", { id: "job-phase" }, job.phase || "—"),
      job.reason ? ` · ${job.reason}` : "", job.cancel && job.status < TERMINAL ? ` · cancelling (${job.cancel})` : ""),
    h("div", { class: "card" },
      h("div", { class: "progress", title: `${done} of ${p.total || 0}` }, h("span", { style: { width: `${p.total ? (100 * done) / p.total : 0}%` } })),
      h("p", { id: "job-progress" }, `${done} / ${p.total || 0} instances on the new build`,
        p.by_state && Object.keys(p.by_state).length ? " · " + Object.entries(p.by_state).map(([k, v]) => `${v} ${k}`).join(", ") : ""),
      p.regions && p.regions.length ? table(["region", "instances by state"], p.regions.map((r) => [r.region,
        Object.entries(r).filter(([k]) => k !== "region").map(([k, v]) => `${v} ${k}`).join(", ")])) : ""),
  ];
}

// The job's instances (GET /patchjobs/{id}/instances): each old one, its replacement and a
// revert's, and how each one's last process ended.
function jobInstances(page) {
  const brief = (i) => (i ? `#${i.id} ${i.profile} ${i.state}` : "—");
  const ended = (m) => [["old", m.old], ["new", m.new], ["revert", m.revert]]
    .filter(([, i]) => i && i.exit_text).map(([k, i]) => `${k} #${i.id} ${i.exit_text}`).join("; ") || "—";
  return [
    h("h2", {}, "Instances"),
    table(["instance", "host", "state", "old", "new", "revert", "how they ended"], page.instances.map((m) => [
      `#${m.instance_id}`, m.host, m.state || "—", brief(m.old), brief(m.new), brief(m.revert), ended(m)])),
    page.total > page.instances.length ? h("p", { class: "muted" }, `the first ${page.instances.length} of ${page.total}`) : "",
  ];
}

// Follows GET /api/v1/patchjobs/{id}/stream (server-sent events). fetch() rather than
// EventSource, because EventSource cannot send the Authorization header; reconnects with
// Last-Event-ID until the stream says the job ended or the page is left.
async function follow(id, onJob, onEvent, live) {
  const signal = viewAbort.signal;
  let last = 0;
  while (!signal.aborted) {
    try {
      const r = await fetch(`/api/v1/patchjobs/${id}/stream?after=${last}`, { signal,
        headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) } });
      if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
      live.textContent = "● live";
      live.className = "live";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const msg = parseSse(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (msg.event === "event") { last = Math.max(last, msg.data.id); onEvent(msg.data); }
          else if (msg.event === "job") onJob(msg.data);
          else if (msg.event === "end") { onJob(msg.data); live.textContent = "finished"; live.className = "live off"; return; }
          else if (msg.event === "error") throw new ApiError(msg.data.status, msg.data);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      live.textContent = "disconnected";
      live.className = "live off";
      if (e instanceof ApiError) { showError(e); return; }
    }
    await new Promise((ok) => setTimeout(ok, 1000));  // the stream ended (its time limit): reconnect
  }
}

function parseSse(block) {
  const msg = { event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;  // a keep-alive comment
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "event") msg.event = value;
    else if (field === "data") msg.data += value;
  }
  msg.data = msg.data ? JSON.parse(msg.data) : null;
  return msg;
}

// -- routing ---------------------------------------------------------------------------------

const ROUTES = [
  [/^\/images$/, imagesView], [/^\/images\/([^/]+)$/, imageView], [/^\/images\/([^/]+)\/branches\/([^/]+)$/, branchView],
  [/^\/diffs\/(\d+)$/, diffView], [/^\/fleets$/, fleetsView], [/^\/fleets\/([^/]+)$/, fleetView],
  [/^\/players$/, playersView], [/^\/jobs$/, jobsView], [/^\/jobs\/new$/, newJobView], [/^\/jobs\/(\d+)$/, jobView],
];

async function route() {
  viewAbort.abort();
  viewAbort = new AbortController();
  const [path, query] = (location.hash.slice(1) || "/images").split("?");
  const view = document.getElementById("view");
  const who = JSON.parse(sessionStorage.getItem(WHO) || "null");
  document.getElementById("nav").hidden = !who;
  document.getElementById("logout").hidden = !who;
  document.getElementById("who").textContent = who ? `${who.name} · ${who.scope}` : "";
  view.replaceChildren();
  if (!who || path === "/login") { showError(null); return loginView(view); }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", path.startsWith(a.getAttribute("href").slice(1)));
  for (const [re, fn] of ROUTES) {
    const m = path.match(re);
    if (m) {
      try {
        await fn(view, ...m.slice(1).map(decodeURIComponent), new URLSearchParams(query || ""));
        view.setAttribute("data-ready", path);
      } catch (e) {
        if (!viewAbort.signal.aborted) showError(e);
      }
      return;
    }
  }
  view.append(h("p", {}, "No such page. ", link("#/images", "Images")));
}

window.addEventListener("hashchange", () => { showError(null); route(); });
document.getElementById("logout").addEventListener("click", () => logout());
route();
