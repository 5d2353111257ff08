// The dashboard's pages: each fills itself from the JSON API and refreshes every 2 s.
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE = document.body.dataset.page;
const ARG = document.body.dataset.arg;
const STATES = ["planned", "prepared", "synced", "frozen", "final_synced", "verified", "switched",
  "live", "finalized", "aborted", "failed", "rolled_back"];
const COLORS = { planned: "#c9ced8", prepared: "#9ec5fe", synced: "#6ea8fe", frozen: "#f2b33d",
  final_synced: "#e59a2f", verified: "#c7a0f5", switched: "#8f6ae0", live: "#2d8a4e",
  finalized: "#1f5e36", aborted: "#f08c84", failed: "#c8372d", rolled_back: "#7b7f8a" };
const $ = id => document.getElementById(id);

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) {
    if (k === "class") e.className = attrs[k]; else if (k === "text") e.textContent = attrs[k];
    else if (k.startsWith("on")) e.addEventListener(k.substring(2), attrs[k]); else e.setAttribute(k, attrs[k]);
  }
  kids.forEach(k => e.appendChild(typeof k === "string" ? document.createTextNode(k) : k));
  return e;
}
function row(tbody, cells) {
  const tr = h("tr");
  cells.forEach(c => tr.appendChild(c instanceof Node ? h("td", {}, c) : h("td", { text: c == null ? "" : String(c) })));
  tbody.appendChild(tr);
  return tr;
}
function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function ms(v) { return v == null ? "–" : v >= 10000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms"; }
function dur(s) {
  if (s == null) return "–";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function when(msv) { return msv ? new Date(msv).toISOString().replace("T", " ").substring(0, 19) + "Z" : "–"; }
function toast(text, bad) {
  const t = $("toast"); t.textContent = text; t.className = bad ? "toast bad" : "toast"; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}
async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("session expired"); }
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
async function post(path, body) {
  const r = await fetch(path, { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF }, body: JSON.stringify(body) });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
// An in-page confirmation (no browser dialog): resolves true on Confirm.
function confirmBox(text) {
  return new Promise(resolve => {
    $("confirm-text").textContent = text; $("confirm").hidden = false;
    const done = v => { $("confirm").hidden = true; $("confirm-ok").onclick = null; $("confirm-cancel").onclick = null; resolve(v); };
    $("confirm-ok").onclick = () => done(true); $("confirm-cancel").onclick = () => done(false);
  });
}
async function waveControl(wave, action, value) {
  const what = action === "throttle" ? (value === 0 ? "remove the throttle of" : "throttle to " + value + " sites at once:") : action;
  if (!await confirmBox("Really " + what + " wave " + wave + "? This is recorded with your name.")) return;
  try {
    await post("/api/wave/" + wave + "/control", { action: action, value: value, confirm: true });
    toast(action + " of wave " + wave + " recorded; the running wave obeys within a second");
    refresh();
  } catch (e) { toast(e.message, true); }
}
function controlText(c, status) {
  if (!c) return "";
  let t = c.paused ? "PAUSED" : (status && !status.finished ? "running" : "");
  if (c.concurrency_limit != null) t += (t ? ", " : "") + "throttled to " + c.concurrency_limit;
  return t;
}
function legend(host, states) {
  host.textContent = "";
  STATES.forEach(s => {
    const n = states[s] || 0; if (!n) return;
    host.appendChild(h("span", { "data-state": s }, h("i", { class: "st-" + s }), s + " " + n.toLocaleString()));
  });
}

async function overview() {
  const d = await api("/api/overview");
  const o = d.overview;
  const st = Object.fromEntries(o.states);
  const done = (st.live || 0) + (st.finalized || 0), failed = (st.failed || 0) + (st.aborted || 0) + (st.rolled_back || 0);
  $("plan").textContent = o.plan ? "plan " + o.plan : "no plan recorded in the journal";
  $("c-total").textContent = o.total_sites.toLocaleString();
  $("c-done").textContent = done.toLocaleString();
  $("c-flight").textContent = (o.total_sites - done - failed - (st.planned || 0)).toLocaleString();
  $("c-failed").textContent = failed.toLocaleString();
  $("c-tput").textContent = bytes(o.throughput_bytes_per_s) + "/s";
  $("c-err").textContent = (100 * o.error_rate).toFixed(1) + " %";
  $("c-freeze").textContent = o.freeze.count ? ms(o.freeze.p50_ms) + " / " + ms(o.freeze.p99_ms) : "–";
  const cur = o.waves.find(w => w.current) || o.waves.find(w => w.in_flight > 0);
  $("c-eta").textContent = cur ? dur(cur.eta_seconds) : "–";
  const bar = $("statebar"); bar.textContent = "";
  STATES.forEach(s => {
    const n = st[s] || 0; if (!n || !o.total_sites) return;
    const sp = h("span", { class: "st-" + s, title: s + ": " + n }); sp.style.width = (100 * n / o.total_sites) + "%"; bar.appendChild(sp);
  });
  legend($("legend"), st);
  const tb = $("waves").tBodies[0]; tb.textContent = "";
  o.waves.forEach(w => {
    const c = d.controls[String(w.wave)];
    const running = d.running && d.running.wave === w.wave ? d.running : null;
    const prog = h("span", { class: "bar" }, h("span")); prog.firstChild.style.width = w.progress_pct.toFixed(1) + "%";
    const ctl = controlText(c, running);
    const btn = w.wave > 0 ? (c && c.paused
      ? h("button", { "data-wave": w.wave, class: "resume", onclick: () => waveControl(w.wave, "resume") }, "Resume")
      : h("button", { "data-wave": w.wave, class: "pause", onclick: () => waveControl(w.wave, "pause") }, "Pause")) : h("span");
    const tr = row(tb, [h("a", { href: "/wave/" + w.wave }, "wave " + w.wave + (w.current ? " (current)" : "")), w.kind, w.window,
      h("span", {}, prog, " " + w.progress_pct.toFixed(1) + " %"), w.done.toLocaleString() + " / " + w.planned_sites.toLocaleString(),
      w.in_flight.toLocaleString(), w.failed.toLocaleString(), dur(w.eta_seconds),
      h("span", { class: c && c.paused ? "paused" : "running", "data-control": w.wave }, ctl), btn]);
    tr.dataset.wave = w.wave;
  });
  const s = o.series;
  Charts.lines($("ch-tput"), s.minutes, [{ name: "bytes/min", values: s.bytes, color: "#2f6fde" },
    { name: "failed steps/min", values: s.failed, color: "#c8372d" }]);
  Charts.lines($("ch-states"), s.minutes, Object.keys(s.states).filter(k => s.states[k].some(v => v))
    .map(k => ({ name: k, values: s.states[k], color: COLORS[k] })));
  Charts.bars($("ch-freeze"), o.freeze.histogram.map(([lo, hi, n]) => [ms(lo) + "–" + ms(hi), n]));
  const et = $("errors").tBodies[0]; et.textContent = "";
  if (!o.errors_by_phase.length) row(et, ["no failed steps"]);
  o.errors_by_phase.forEach(([p, n]) => row(et, [p, n.toLocaleString()]));
  if (o.tunnel.length) $("tunnel").textContent = o.tunnel.map(([k, v]) => k + ": " + JSON.stringify(v)).join("; ");
  routesBanner(o.routes);
}
// The latest check of the SQL proxy's routes against the journal: a banner while it disagrees.
function routesBanner(r) {
  const b = $("routes-banner");
  if (!r || (!r.mismatches && !r.unreachable)) { b.hidden = true; return; }
  b.textContent = "";
  const rep = r.report || {};
  const title = r.mismatches
    ? "The SQL proxy disagrees with the journal: " + r.mismatches + " database(s) (checked " + when(r.checked_ms) + ")"
    : "SQL proxy routes NOT confirmed: " + r.unreachable + " proxy(ies) did not answer (checked " + when(r.checked_ms) + ")";
  b.appendChild(h("b", { text: title }));
  const ul = h("ul");
  (rep.mismatches || []).slice(0, 10).forEach(m => ul.appendChild(h("li", { "data-database": m.database, text:
    m.database + ": journal says " + m.expected_side + ", proxy serves " + m.proxy_side + " (" + m.proxy_mode + "), site " +
    m.site + ", " + m.journal_state + (m.problem === "paused_outside_freeze" ? ", paused outside a freeze: lease-watch or abort decides" : "") })));
  (rep.unreachable || []).forEach(u => ul.appendChild(h("li", { text: "proxy " + u.proxy + ": " + u.error })));
  if ((rep.mismatches_total || 0) > 10) ul.appendChild(h("li", { text: "… and " + (rep.mismatches_total - 10) + " more" }));
  b.appendChild(ul);
  if (r.mismatches) b.appendChild(h("div", {}, "Repair from the journal: ", h("code", { text: "migrator routes reconcile --sites SITES --journal JOURNAL --dry-run" }), " then without --dry-run (runbooks/cutover.md)."));
  b.hidden = false;
}

let sort = { key: "site", desc: false }, pageNo = 1;
function filters() {
  const p = new URLSearchParams();
  if ($("f-state").value) p.set("state", $("f-state").value);
  if ($("f-q").value) p.set("q", $("f-q").value);
  if ($("f-errors").checked) p.set("errors", "true");
  p.set("sort", sort.key); if (sort.desc) p.set("desc", "true");
  p.set("page", pageNo);
  return p;
}
function waveSetup() {
  $("title").textContent = ARG === "all" ? "All sites" : "Wave " + ARG;
  STATES.forEach(s => $("f-state").appendChild(h("option", { value: s }, s)));
  const q = new URLSearchParams(location.search);
  $("f-state").value = q.get("state") || ""; $("f-q").value = q.get("q") || ""; $("f-errors").checked = q.get("errors") === "true";
  sort.key = q.get("sort") || "site"; sort.desc = q.get("desc") === "true"; pageNo = +(q.get("page") || 1);
  $("filter").addEventListener("submit", ev => { ev.preventDefault(); pageNo = 1; refresh(); });
  document.querySelectorAll("th[data-sort]").forEach(th => th.addEventListener("click", () => {
    if (sort.key === th.dataset.sort) sort.desc = !sort.desc; else { sort.key = th.dataset.sort; sort.desc = false; }
    refresh();
  }));
  $("prev").onclick = () => { if (pageNo > 1) { pageNo--; refresh(); } };
  $("next").onclick = () => { pageNo++; refresh(); };
  if (ARG === "all") $("w-buttons").hidden = true;
  $("btn-pause").onclick = () => waveControl(ARG, "pause");
  $("btn-resume").onclick = () => waveControl(ARG, "resume");
  $("btn-throttle").onclick = () => waveControl(ARG, "throttle", +$("throttle-n").value);
}
async function wave() {
  const p = filters();
  history.replaceState(null, "", location.pathname + "?" + p.toString());
  const [page, head] = await Promise.all([api("/api/wave/" + ARG + "/sites?" + p.toString()),
    ARG === "all" ? Promise.resolve(null) : api("/api/wave/" + ARG)]);
  if (head) {
    legend($("w-states"), head.states);
    const t = controlText(head.control, head.status) + (head.control.reason ? " — " + head.control.reason : "");
    $("w-control").textContent = t; $("w-control").className = head.control.paused ? "paused" : "running";
    const hb = $("history").tBodies[0]; hb.textContent = "";
    head.history.slice().reverse().forEach(c => row(hb, [when(c.at_ms), c.who, c.source, c.action.action + (c.action.value != null ? " " + c.action.value : ""), c.note || ""]));
  }
  pageNo = page.page;
  document.querySelectorAll("th[data-sort]").forEach(th => th.classList.toggle("sorted", th.dataset.sort === sort.key));
  const tb = $("sites").tBodies[0]; tb.textContent = "";
  page.rows.forEach(r => {
    const tr = row(tb, [h("a", { href: "/site/" + encodeURIComponent(r.site) }, r.site), h("span", {}, h("i", { class: "st-" + r.state }), " " + r.state), bytes(r.bytes),
      ms(r.phases["sync"]), ms(r.phases["final-sync"]), ms(r.phases["verify"]), ms(r.phases["switch"]),
      ms(r.freeze_ms), r.errors, r.last_error || "", when(r.updated_ms)]);
    tr.children[9].className = "err";
  });
  $("pageinfo").textContent = "page " + page.page + " of " + page.pages + " (" + page.total.toLocaleString() + " sites)";
}

async function site() {
  const d = await api("/api/site/" + encodeURIComponent(ARG));
  const s = d.site;
  $("title").textContent = "Site " + s.site;
  $("s-state").textContent = s.state; $("s-wave").textContent = s.wave == null ? "–" : s.wave;
  $("s-bytes").textContent = bytes(s.bytes); $("s-freeze").textContent = ms(s.freeze_ms);
  // Consistency-point bundle: finalize waits for "verified".
  const b = s.bundle;
  $("s-bundle").textContent = b ? b.stage + " (" + b.bundle + ", " + bytes(b.bytes) + ")" + (b.error ? ": " + b.error : "") : "none";
  $("s-bundle").className = "v" + (b && b.stage === "failed" ? " err" : "");
  const t0 = s.steps.length ? s.steps[0].started_ms : 0;
  const tb = $("steps").tBodies[0]; tb.textContent = "";
  s.steps.forEach(x => {
    const tr = row(tb, ["+" + ((x.started_ms - t0) / 1000).toFixed(3), x.phase, x.status, x.ended_ms ? ms(x.ended_ms - x.started_ms) : "(running or interrupted)", bytes(x.bytes), x.error || ""]);
    tr.children[5].className = "err";
  });
  // Timeline: one bar per step on a shared time axis.
  const host = $("timeline"); host.textContent = "";
  if (s.steps.length) {
    const end = Math.max(...s.steps.map(x => x.ended_ms || Date.now()));
    const span = Math.max(end - t0, 1);
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 800 " + (s.steps.length * 16 + 4)); svg.setAttribute("class", "timeline");
    s.steps.forEach((x, i) => {
      const r = document.createElementNS(NS, "rect");
      const a = 120 + 670 * (x.started_ms - t0) / span, b = 120 + 670 * ((x.ended_ms || end) - t0) / span;
      r.setAttribute("x", a); r.setAttribute("y", i * 16 + 2); r.setAttribute("width", Math.max(b - a, 2)); r.setAttribute("height", 12);
      r.setAttribute("fill", x.status === "failed" ? "#c8372d" : x.status === "done" ? "#2d8a4e" : "#f2b33d");
      const tx = document.createElementNS(NS, "text"); tx.setAttribute("x", 2); tx.setAttribute("y", i * 16 + 12); tx.textContent = x.phase;
      svg.appendChild(r); svg.appendChild(tx);
    });
    host.appendChild(svg);
  }
  const vb = $("verify").tBodies[0]; vb.textContent = "";
  if (!s.verification.length) row(vb, ["no verification yet"]);
  s.verification.forEach(x => row(vb, [x.phase, x.status === "done" ? "equal" : x.status, when(x.ended_ms), x.error || ""]));
  const cb = $("checkpoints").tBodies[0]; cb.textContent = "";
  s.checkpoints.forEach(([k, v]) => row(cb, [k, v]));
  $("rb-why").textContent = d.rollback_unavailable ? "Rollback unavailable: " + d.rollback_unavailable : "Freezes the site on the new side, copies its changes back, verifies, and switches it back to the old side.";
  $("btn-rollback").disabled = !s.can_rollback;
  const ctl = $("controls").tBodies[0]; ctl.textContent = "";
  s.controls.forEach(c => row(ctl, [when(c.at_ms), c.who, c.action, c.result || "", c.detail || ""]));
}
function siteSetup() {
  $("btn-rollback").onclick = async () => {
    if (!await confirmBox("Roll back site " + ARG + " to the old datacenter? Writes made on the new side are copied back. This is recorded with your name.")) return;
    try { await post("/api/site/" + encodeURIComponent(ARG) + "/rollback", { confirm: true }); toast("rollback of " + ARG + " started"); refresh(); }
    catch (e) { toast(e.message, true); }
  };
}

const PAGES = { overview: overview, wave: wave, site: site };
let busy = false;
async function refresh() {
  if (busy) return; busy = true;
  try { await PAGES[PAGE](); $("live").textContent = "updated " + new Date().toISOString().substring(11, 19) + "Z"; }
  catch (e) { $("live").textContent = "error: " + e.message; }
  finally { busy = false; }
}
document.addEventListener("DOMContentLoaded", () => {
  $("logout").addEventListener("submit", async ev => {
    ev.preventDefault();
    await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
    location.href = "/login";
  });
  if (PAGE === "wave") waveSetup();
  if (PAGE === "site") siteSetup();
  refresh();
  setInterval(refresh, 2000);
});
