// The dashboard's app panel: pick an app, see its charts (charts.js), and
// act on it: restart, scale, roll back, suspend/resume, edit config vars.
// Every action asks for a confirmation first, then calls the same HTTP API
// the CLI uses (roost.controller.api.manage), with the logged-in token: the
// API decides who may do what, the page only asks.
"use strict";
(function () {
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c]));
  const $ = (sel, root = document) => root.querySelector(sel);
  const state = {app: null, span: "hour", apps: [], chartsAt: 0, busy: false};

  function api(method, path, body) {
    const headers = {"Authorization": "Bearer " + (localStorage.getItem("roost-token") || "")};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch("/api" + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)})
      .then(async (r) => {
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(data.message || data.detail || `HTTP ${r.status}`);
        return data;
      });
  }

  // One confirmation dialog for every action; resolves true on "Confirm".
  function confirmed(text) {
    const dlg = $("#confirm");
    $("#confirm-text").textContent = text;
    dlg.showModal();
    return new Promise((resolve) => {
      const done = (answer) => () => { dlg.close(); yes.onclick = no.onclick = null; resolve(answer); };
      const yes = $("#confirm-yes"), no = $("#confirm-no");
      yes.onclick = done(true);
      no.onclick = done(false);
    });
  }

  function say(text, bad) {
    const out = $("#action-result");
    out.textContent = text;
    out.className = bad ? "down" : "up";
  }

  // Ask, call, show the app as it now is, then say what happened: said
  // before the panel is drawn again, an owner already picking the next
  // action (a release to roll back to) had the panel redrawn under the
  // pointer, the choice and the click lost.
  async function act(question, call, describe) {
    if (state.busy || !(await confirmed(question))) return;
    state.busy = true;
    let text, bad = false;
    try {
      text = describe(await call());
    } catch (e) {
      [text, bad] = [e.message, true];
    } finally {
      state.busy = false;
    }
    await loadPanel();
    say(text, bad);
  }

  const backOptions = (back) => back.map((r) => `<option value="${r.version}">v${r.version} ${esc(r.description)}</option>`).join("");

  // Only the roll-back list, in place: a rollout ending supersedes the
  // release before it while the owner may be typing in the panel's inputs,
  // which a whole reload would wipe.
  async function loadReleases() {
    const app = state.app;
    let releases;
    try {
      releases = await api("GET", `/apps/${encodeURIComponent(app)}/releases`);
    } catch (e) { return; }
    const sel = $("#rollback-to"), button = $('[data-action="rollback"]');
    if (app !== state.app || !sel || !button) return;
    const back = releases.filter((r) => r.status === "superseded");
    const picked = sel.value;
    sel.innerHTML = backOptions(back);
    if (back.some((r) => String(r.version) === picked)) sel.value = picked;
    button.disabled = back.length === 0;
  }

  function current() { return state.apps.find((a) => a.name === state.app) || null; }

  async function loadPanel() {
    const app = state.app;
    const body = $("#app-panel");
    if (!app) { body.innerHTML = "no apps yet"; return; }
    let formation = {}, config = {}, releases = [];
    try {
      [formation, config, releases] = await Promise.all([
        api("GET", `/apps/${encodeURIComponent(app)}/formation`),
        api("GET", `/apps/${encodeURIComponent(app)}/config`),
        api("GET", `/apps/${encodeURIComponent(app)}/releases`),
      ]);
    } catch (e) { body.textContent = e.message; return; }
    if (app !== state.app) return;  // another app was picked meanwhile
    const a = current();
    const suspended = a ? a.suspended : false;
    const back = releases.filter((r) => r.status === "superseded");
    body.innerHTML = `
      <div class="actions">
        <button data-action="restart">Restart</button>
        <button data-action="${suspended ? "resume" : "suspend"}">${suspended ? "Resume" : "Suspend"}</button>
        <span class="group">roll back to
          <select id="rollback-to">${backOptions(back)}</select>
          <button data-action="rollback" ${back.length ? "" : "disabled"}>Roll back</button></span>
        <span id="app-state" class="muted">${suspended ? "suspended" : ""}</span>
      </div>
      <div class="actions">scale:
        ${Object.entries(formation).map(([p, n]) => `<label>${esc(p)} <input class="qty" data-process="${esc(p)}" type="number" min="0" value="${n}"></label>`).join(" ")}
        <button data-action="scale" ${Object.keys(formation).length ? "" : "disabled"}>Scale</button>
      </div>
      <table class="config"><tr><th>config var</th><th>value</th><th></th></tr>
        ${Object.entries(config).sort().map(([k, v]) => `<tr data-var="${esc(k)}"><td>${esc(k)}</td>
          <td><input class="value" value="${esc(v)}"></td>
          <td><button data-action="config-set">Save</button> <button data-action="config-unset">Unset</button></td></tr>`).join("")}
        <tr><td><input id="new-var" placeholder="NAME"></td><td><input id="new-value" placeholder="value"></td>
          <td><button data-action="config-add">Add</button></td></tr>
      </table>`;
    wire(body, app, formation);
  }

  function wire(body, app, formation) {
    const at = `/apps/${encodeURIComponent(app)}`;
    const on = (name, f) => body.querySelectorAll(`[data-action="${name}"]`).forEach((b) => b.addEventListener("click", f));
    on("restart", () => act(`Restart ${app}? Its instances are replaced one by one by fresh ones.`,
      () => api("POST", `${at}/restart`, {}), (r) => `restarting: release v${r.release}`));
    // The board's next refresh says so too; until then the panel knows it
    // (else it would offer to suspend again for up to two seconds).
    const noted = (suspended) => { const a = current(); if (a) a.suspended = suspended; };
    on("suspend", () => act(`Suspend ${app}? Its instances stop and visitors see the suspended page.`,
      () => api("POST", `${at}/suspend`), () => { noted(true); return `${app} suspended`; }));
    on("resume", () => act(`Resume ${app}? Its instances start again.`,
      () => api("POST", `${at}/resume`), () => { noted(false); return `${app} resumed`; }));
    on("rollback", () => {
      const v = Number($("#rollback-to").value);
      act(`Roll ${app} back to v${v}? Its code and config vars become those of v${v}, as a new release.`,
        () => api("POST", `${at}/rollback`, {version: v}), (r) => `rolled back to v${r.from}: release v${r.release}`);
    });
    on("scale", () => {
      const want = {};
      body.querySelectorAll("input.qty").forEach((i) => {
        const n = Number(i.value);
        if (n !== formation[i.dataset.process]) want[i.dataset.process] = n;
      });
      if (!Object.keys(want).length) { say("nothing to change", true); return; }
      const said = Object.entries(want).map(([p, n]) => `${p}=${n}`).join(" ");
      act(`Scale ${app} to ${said}?`, () => api("PATCH", `${at}/formation`, {quantities: want}),
        (r) => "formation: " + Object.entries(r).map(([p, n]) => `${p}=${n}`).join(" "));
    });
    const setVar = (key, value) => act(
      value === null ? `Unset ${key} on ${app}? This makes a new release.` : `Set ${key} on ${app}? This makes a new release.`,
      () => api("PATCH", `${at}/config`, {vars: {[key]: value}}),
      (r) => `${value === null ? "unset" : "set"} ${key}: release v${r.release}`);
    on("config-set", (ev) => {
      const row = ev.target.closest("tr");
      setVar(row.dataset.var, $("input.value", row).value);
    });
    on("config-unset", (ev) => setVar(ev.target.closest("tr").dataset.var, null));
    on("config-add", () => {
      const key = $("#new-var").value.trim();
      if (!key) { say("a config var needs a name", true); return; }
      setVar(key, $("#new-value").value);
    });
  }

  async function drawCharts() {
    if (!state.app || !window.RoostCharts) return;
    state.chartsAt = Date.now();
    try {
      await window.RoostCharts.show($("#app-charts"), state.app, state.span);
    } catch (e) { $("#app-charts").textContent = e.message; }
  }

  function pick(app) {
    state.app = app;
    $("#app-pick").value = app;
    $("#action-result").textContent = "";
    loadPanel();
    drawCharts();
  }

  function build() {
    const view = $("#app-view");
    view.innerHTML = `
      <h2>App <select id="app-pick"></select>
        <span class="spans">charts over the last
        <button data-span="hour" class="span-on">hour</button> <button data-span="day">day</button></span></h2>
      <div id="app-panel" class="muted">loading…</div>
      <div id="action-result"></div>
      <div id="app-charts"></div>
      <dialog id="confirm"><p id="confirm-text"></p>
        <button id="confirm-yes">Confirm</button> <button id="confirm-no">Cancel</button></dialog>`;
    $("#app-pick").addEventListener("change", (ev) => pick(ev.target.value));
    view.querySelectorAll("[data-span]").forEach((b) => b.addEventListener("click", () => {
      state.span = b.dataset.span;
      view.querySelectorAll("[data-span]").forEach((o) => o.classList.toggle("span-on", o === b));
      drawCharts();
    }));
  }

  // What can change without an action of this page: another user suspends
  // the app (the panel is loaded again), a rollout ends and supersedes the
  // release before it (the roll-back list is).
  const suspensions = (apps) => apps.map((a) => `${a.name}:${a.suspended}`).join();
  const releaseKey = (apps) => apps.map((a) =>
    `${a.name}:${a.release}:${(a.deploys || []).map((r) => `${r.version}=${r.status}`).join("/")}`).join();

  // Each refresh of the board (index.html) hands us its data: the app list,
  // whether the picked app is suspended now, its releases.
  document.addEventListener("roost:data", (ev) => {
    const apps = ev.detail.apps || [];
    const view = $("#app-view");
    if (!$("#app-pick")) build();
    view.hidden = apps.length === 0;
    const before = suspensions(state.apps), releasesBefore = releaseKey(state.apps);
    state.apps = apps;
    const picker = $("#app-pick");
    const names = apps.map((a) => a.name);
    if (picker.options.length !== names.length || [...picker.options].some((o, i) => o.value !== names[i])) {
      picker.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
    }
    if (!names.includes(state.app)) { if (names.length) pick(names[0]); return; }
    picker.value = state.app;
    if (!state.busy && before !== suspensions(apps)) loadPanel();
    else if (!state.busy && releasesBefore !== releaseKey(apps)) loadReleases();
    // The hour's points are 10 s apart, the day's 5 min: redraw as often.
    if (Date.now() - state.chartsAt > (state.span === "hour" ? 10000 : 60000)) drawCharts();
  });
})();
