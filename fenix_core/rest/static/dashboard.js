// fenix-api dashboard: asks for a token once (kept in this tab's
// sessionStorage), polls the dashboard's JSON endpoints with it as
// X-Auth-Token and draws the pages. No library, no build step.
"use strict";
(function () {
  const KEY = "fenix-dashboard-token";
  const body = document.body;
  const root = body.dataset.root || "";
  const page = body.dataset.page;
  const query = new URLSearchParams(location.search);
  // ?poll=MS sets the refresh interval (at least 250 ms; 2 s by default).
  const interval = Math.max(250, Number(query.get("poll")) || 2000);
  const sessionId = page === "session" ? decodeURIComponent(location.pathname.split("/").pop()) : null;
  const collapsed = new Set();
  let autoCollapsed = false;
  let who = null;
  let timer = null;
  let last = null;

  const $ = (id) => document.getElementById(id);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESC[c]);

  async function api(method, path, data) {
    const headers = { "X-Auth-Token": sessionStorage.getItem(KEY) || "" };
    const init = { method, headers, cache: "no-store" };
    if (data !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(data);
    }
    const response = await fetch(root + path, init);
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (!response.ok) {
      const error = new Error((answer && answer.error && answer.error.message) || response.statusText);
      error.status = response.status;
      throw error;
    }
    return answer;
  }

  // ------------------------------------------------------------------ log in

  function showLogin(message) {
    clearTimeout(timer);
    // Nothing of the last caller's page stays (its controls, its data).
    $("content").innerHTML = "";
    $("content").hidden = true;
    last = null;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function showMessage(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  async function start() {
    if (!sessionStorage.getItem(KEY)) return showLogin("");
    try {
      who = await api("GET", "/dashboard/api/whoami");
    } catch (error) {
      if (error.status === 401) {
        sessionStorage.removeItem(KEY);
        return showLogin("That token is not valid.");
      }
      return showMessage(error.message);
    }
    $("who").textContent = who.admin ? "admin" : "project " + who.project_id;
    $("login").hidden = true;
    $("logout").hidden = false;
    $("content").hidden = false;
    poll();
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    start();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });

  async function poll() {
    clearTimeout(timer);
    try {
      if (page === "sessions") {
        renderSessions(await api("GET", "/dashboard/api/sessions"));
      } else {
        last = await api("GET", "/dashboard/api/sessions/" + encodeURIComponent(sessionId));
        renderSession(last);
      }
      showMessage("");
      $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (error) {
      if (error.status === 401) {
        sessionStorage.removeItem(KEY);
        return showLogin("The token is no longer valid.");
      }
      showMessage(error.message);
      if (error.status === 403 || error.status === 404) {
        $("content").hidden = true;
        return;
      }
    }
    timer = setTimeout(poll, interval);
  }

  // ------------------------------------------------------------------ formatting

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + " s";
    const m = Math.round(s / 60);
    if (m < 120) return m + " min";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h " + String(m % 60).padStart(2, "0") + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }
  const when = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "–");
  // <progress>, not a styled <span>: the page's CSP allows no inline styles.
  const bar = (fraction, over) =>
    `<progress class="bar${over ? " over" : ""}" max="100" value="${Math.round(
      Math.min(1, Math.max(0, fraction)) * 100
    )}"></progress>`;
  const badge = (s) =>
    `<span class="badge ${esc(s.state)}" data-role="state">${esc(s.state)}</span>` +
    (s.paused ? ' <span class="badge paused" data-role="paused">PAUSED</span>' : "");
  function eta(progress) {
    if (!progress || progress.eta_seconds === null || progress.eta_seconds === undefined) return "–";
    return `in ${duration(progress.eta_seconds)} (${when(progress.estimated_end)})`;
  }
  const table = (head, rows, empty) =>
    rows.length
      ? `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`
      : `<p class="empty">${empty}</p>`;

  // ------------------------------------------------------------------ sessions list

  function renderSessions(data) {
    const admin = who.admin;
    const rows = data.sessions.map((s) => {
      const p = s.progress || {};
      const link = `${root}/dashboard/sessions/${encodeURIComponent(s.session_id)}`;
      return (
        `<tr data-session="${esc(s.session_id)}" data-state="${esc(s.state)}">` +
        `<td><a href="${esc(link)}" title="${esc(s.session_id)}">${esc(s.session_id.slice(0, 8))}</a></td>` +
        `<td>${esc(s.workflow)}</td><td>${badge(s)}</td>` +
        `<td>${bar(s.percent_done / 100)} ${s.percent_done}% · ${p.hosts_done ?? 0}/${s.hosts} hosts` +
        (p.hosts_failed ? ` · <span class="late">${p.hosts_failed} failed</span>` : "") +
        `</td><td>${eta(p)}</td>` +
        (admin ? `<td class="num">${s.projects}</td>` : `<td>${s.awaiting_reply ? '<span class="late">your reply is awaited</span>' : "–"}</td>`) +
        `<td>${when(s.updated_at)}</td></tr>`
      );
    });
    $("content").innerHTML =
      `<h1>Maintenance sessions</h1>` +
      table(
        ["session", "workflow", "state", "progress", "ends", admin ? "projects" : "your project", "updated"],
        rows,
        "No sessions."
      );
  }

  // ------------------------------------------------------------------ one session

  function skeleton() {
    if ($("s-head")) return;
    const controls = who.admin
      ? `<div class="controls" id="s-controls">
           <button type="button" data-action="pause">Pause</button>
           <button type="button" data-action="resume">Resume</button>
           <button type="button" data-action="retry">Retry</button>
           <button type="button" data-action="cancel" class="danger">Cancel</button>
         </div>`
      : "";
    const legend = [
      ["waiting", "not started"], ["draining", "draining"], ["drained", "drained"],
      ["maintenance", "in maintenance"], ["done", "done"], ["decommissioned", "decommissioned"],
      ["failed", "failed"], ["skipped", "skipped"], ["target", "added (target)"],
    ]
      .map(([c, label]) => `<span class="chip"><span class="swatch sw-${c}"></span>${label}</span>`)
      .join("");
    $("content").innerHTML =
      `<p><a href="${esc(root)}/dashboard">← all sessions</a></p>` +
      `<div id="s-head"></div>${controls}<div class="chips" id="s-counts"></div>` +
      `<h2>Hosts</h2><div class="chips">${legend}</div>` +
      `<div class="toolbar"><input id="s-filter" type="search" placeholder="filter hosts (name or state)">` +
      `<span class="hint">the workflow picks the next host by load; click a group to fold it</span></div>` +
      `<div class="timeline"><svg id="s-axis" height="22"></svg><div class="scroll" id="s-scroll"><svg id="s-hosts"></svg></div></div>` +
      `<div class="grid2"><div><h2>Questions awaiting answers</h2><div id="s-questions"></div></div>` +
      `<div><h2>Groups: impact against limit</h2><div id="s-groups"></div></div></div>` +
      `<div class="grid2"><div><h2>Stuck work</h2><div id="s-stuck"></div></div>` +
      `<div><h2>What moves wait for</h2><div id="s-blocked"></div></div></div>` +
      `<h2>Notifications per project</h2><div id="s-notices"></div>`;
    if (who.admin) {
      $("s-controls").addEventListener("click", (event) => {
        const action = event.target.dataset && event.target.dataset.action;
        if (action) control(action);
      });
    }
    $("s-filter").addEventListener("input", () => last && drawHosts(last));
    $("s-hosts").addEventListener("click", (event) => {
      const section = event.target.closest && event.target.closest("[data-section]");
      if (!section) return;
      const key = section.dataset.section;
      if (collapsed.has(key)) collapsed.delete(key);
      else collapsed.add(key);
      drawHosts(last);
    });
  }

  async function control(action) {
    const path = "/v1/maintenance/" + encodeURIComponent(sessionId);
    if (action === "cancel" && !window.confirm("Cancel this session? Hosts out of service come back.")) return;
    try {
      if (action === "retry") await api("PUT", path, { retry: true });
      else await api("POST", path + "/" + action);
      showMessage("");
    } catch (error) {
      showMessage(`${action}: ${error.message}`);
    }
    poll();
  }

  function renderSession(d) {
    skeleton();
    const s = d.session;
    const p = s.progress || {};
    $("s-head").innerHTML =
      `<h1>Session <code>${esc(s.session_id)}</code> ${badge(s)}</h1><div class="facts">` +
      `<div><span>workflow</span>${esc(s.workflow)}</div>` +
      `<div><span>done</span>${bar(s.percent_done / 100)} <b id="s-percent">${s.percent_done}%</b></div>` +
      `<div><span>ends</span><b id="s-eta">${eta(p)}</b></div>` +
      `<div><span>started</span>${when(s.created_at)}</div>` +
      (s.maintenance_at ? `<div><span>maintenance at</span>${when(s.maintenance_at)}</div>` : "") +
      (s.waiting ? `<div><span>waiting</span><b>${esc(s.waiting)}</b></div>` : "") +
      (s.reason ? `<div><span>reason</span>${esc(s.reason)}</div>` : "") +
      `</div>`;
    if (d.controls) {
      for (const button of $("s-controls").querySelectorAll("button")) {
        button.disabled = !d.controls[button.dataset.action];
      }
    }
    const counts = [
      ["done", p.hosts_done, "done"], ["maintenance", p.hosts_in_progress, "in progress"],
      ["waiting", p.hosts_waiting, "waiting"], ["failed", p.hosts_failed, "failed"],
      ["skipped", p.hosts_skipped, "skipped"], ["removed", p.hosts_removed, "removed"],
    ];
    $("s-counts").innerHTML = counts
      .filter(([, n], i) => n || i < 3)
      .map(([c, n, label]) => `<span class="chip" data-count="${c}"><span class="swatch sw-${c}"></span>${n ?? 0} ${label}</span>`)
      .join("") + `<span class="chip">${d.waves} wave${d.waves === 1 ? "" : "s"} so far</span>`;
    drawHosts(d);
    $("s-questions").innerHTML = table(
      ["project", "question", "instances", "answer by"],
      d.questions.map((q) =>
        `<tr data-project="${esc(q.project_id)}"><td>${esc(q.project_id)}</td><td>${esc(q.state)}</td>` +
        `<td>${q.instance_ids.map(esc).join(", ")}</td><td class="${q.seconds_left < 0 ? "late" : ""}">` +
        `${when(q.reply_at)} (${q.seconds_left < 0 ? "late by " + duration(-q.seconds_left) : "in " + duration(q.seconds_left)})</td></tr>`
      ),
      "No question is waiting for an answer."
    );
    $("s-groups").innerHTML = table(
      ["group", "project", "members", "impacted now / limit", "peak"],
      d.groups.map((g) => {
        const over = g.limit !== null && g.impacted_now > g.limit;
        const limit = g.limit === null ? "no limit" : g.limit;
        return (
          `<tr class="${over ? "over" : ""}" data-group="${esc(g.group_id)}"><td>${esc(g.group_id)}</td><td>${esc(g.project_id)}</td>` +
          `<td class="num">${g.members}</td><td>${bar(g.limit ? g.impacted_now / g.limit : 0, over)} ${g.impacted_now} / ${limit}</td>` +
          `<td class="num">${g.peak}</td></tr>`
        );
      }),
      "No group has members in this session."
    );
    $("s-stuck").innerHTML = table(
      ["what", "where", "why", "for", "policy"],
      d.stuck.map((w) =>
        `<tr><td>${esc(w.kind)}</td><td>${esc(w.instance_id || w.host || "")}${w.instance_id && w.host ? " on " + esc(w.host) : ""}</td>` +
        `<td>${esc(w.detail)}</td><td>${duration(w.age_seconds)}</td><td>${esc(w.policy)}</td></tr>`
      ),
      "Nothing is stuck."
    );
    $("s-blocked").innerHTML = table(
      ["instance", "project", "host", "waiting for"],
      d.blocked.map((b) =>
        `<tr><td>${esc(b.instance_id)}</td><td>${esc(b.project_id)}</td><td>${esc(b.host)}</td><td>${esc(b.detail)}</td></tr>`
      ),
      "No move is held up."
    );
    $("s-notices").innerHTML = Object.keys(d.notifications).length
      ? table(
          ["project", "dialogue state", "sent", "latest notifications (newest first)"],
          Object.entries(d.notifications).map(([project, n]) =>
            `<tr data-project="${esc(project)}"><td>${esc(project)}</td><td>${esc(d.projects[project] || "–")}</td>` +
            `<td class="num">${n.total}</td><td>${n.latest
              .slice(0, 6)
              .map((x) => `${esc(x.state)} <small>(${x.instances} inst., ${when(x.sent_at).slice(11)}${x.delivery ? ", " + esc(x.delivery) : ""})</small>`)
              .join("<br>") || "–"}</td></tr>`
          ),
          ""
        )
      : '<p class="empty">No project in this session.</p>';
  }

  // ------------------------------------------------------------------ the host timeline

  const PHASE = {
    PENDING: "waiting", DRAINING: "draining", DRAINED: "drained", IN_MAINTENANCE: "maintenance",
    MAINTAINED: "done", DECOMMISSIONED: "decommissioned", FAILED: "failed", SKIPPED: "skipped",
    ADDING: "target", ADDED: "target", REMOVED: "removed",
  };
  const DONE = new Set(["MAINTAINED", "DECOMMISSIONED"]);

  function sectionOf(h) {
    if (h.wave !== null) return [h.wave, "wave " + (h.wave + 1)];
    if (h.state === "DRAINING" || h.state === "DRAINED") return [1e6, "draining now"];
    if (h.state === "PENDING") return [1e6 + 1, "not started"];
    return [1e6 + 2, "not maintained here"];
  }

  function drawHosts(d) {
    const hosts = d.hosts.map((a) => ({ name: a[0], state: a[1], drain: a[2], maint: a[3], end: a[4], wave: a[5] }));
    const stuck = new Set(d.stuck.map((w) => w.host).filter(Boolean));
    const filter = ($("s-filter").value || "").trim().toLowerCase();
    const shown = filter
      ? hosts.filter((h) => h.name.toLowerCase().includes(filter) || h.state.toLowerCase().includes(filter))
      : hosts;
    const sections = new Map();
    for (const h of shown) {
      const [order, key] = sectionOf(h);
      if (!sections.has(key)) sections.set(key, { order, hosts: [] });
      sections.get(key).hosts.push(h);
    }
    // Beyond 200 hosts, waves that are over start folded (click to open).
    if (!autoCollapsed && hosts.length > 200) {
      autoCollapsed = true;
      for (const [key, sec] of sections) {
        if (key.startsWith("wave ") && sec.hosts.every((h) => DONE.has(h.state))) collapsed.add(key);
      }
    }
    const now = d.now_offset;
    const etaEnd = d.session.progress && d.session.progress.estimated_end
      ? (Date.parse(d.session.progress.estimated_end) - Date.parse(d.start)) / 1000
      : null;
    let span = Math.max(now, etaEnd || 0, 10);
    for (const h of hosts) span = Math.max(span, h.end || 0);
    span *= 1.03;
    const rowH = hosts.length > 300 ? 11 : 15;
    const label = 150;
    const width = Math.max(600, $("s-scroll").clientWidth || 900);
    const plot = width - label - 10;
    const x = (t) => label + (plot * Math.max(0, t)) / span;
    const parts = [];
    let y = 0;
    for (const [key, sec] of [...sections].sort((a, b) => a[1].order - b[1].order)) {
      const done = sec.hosts.filter((h) => DONE.has(h.state)).length;
      const folded = collapsed.has(key);
      parts.push(
        `<g class="sec" data-section="${esc(key)}" transform="translate(0,${y})"><rect width="${width}" height="18"></rect>` +
        `<text x="4" y="13">${folded ? "▸" : "▾"} ${esc(key)} · ${sec.hosts.length} host${sec.hosts.length === 1 ? "" : "s"}, ${done} done</text></g>`
      );
      y += 18;
      if (folded) continue;
      for (const h of sec.hosts) {
        parts.push(hostRow(h, y, rowH, width, x, now, stuck.has(h.name), d.host_reasons[h.name]));
        y += rowH;
      }
    }
    if (!shown.length) {
      parts.push(`<text x="4" y="14" class="empty">no host matches</text>`);
      y = 20;
    }
    parts.push(`<line class="now" x1="${x(now)}" x2="${x(now)}" y1="0" y2="${y}"></line>`);
    if (etaEnd !== null && etaEnd > now) {
      parts.push(`<line class="eta" x1="${x(etaEnd)}" x2="${x(etaEnd)}" y1="0" y2="${y}"></line>`);
    }
    const svg = $("s-hosts");
    svg.setAttribute("width", width);
    svg.setAttribute("height", Math.max(y, 20));
    svg.innerHTML = parts.join("");
    drawAxis(width, label, span, x, now, etaEnd);
  }

  function hostRow(h, y, rowH, width, x, now, stuck, reason) {
    const bars = [];
    const rect = (a, b, phase) => {
      const left = x(a);
      const w = Math.max(2, x(b) - left);
      bars.push(`<rect class="ph-${phase}" x="${left.toFixed(1)}" y="2" width="${w.toFixed(1)}" height="${rowH - 4}"></rect>`);
    };
    const phase = PHASE[h.state] || "waiting";
    if (h.state === "PENDING") rect(0, now, "waiting");
    if (h.drain !== null) rect(h.drain, h.maint ?? h.end ?? now, h.state === "DRAINED" && h.maint === null ? "drained" : "draining");
    if (h.maint !== null) {
      rect(h.maint, h.end ?? now, h.state === "FAILED" ? "failed" : "maintenance");
      if (h.end !== null && h.end < now) rect(h.end, now, phase);
    } else if (!["PENDING", "DRAINING", "DRAINED"].includes(h.state)) {
      rect(h.end ?? h.drain ?? 0, now, phase);
    }
    const tip = `${h.name}: ${h.state}${stuck ? " (stuck)" : ""}${reason ? " – " + reason : ""}`;
    return (
      `<g class="row${stuck ? " stuck" : ""}" data-host="${esc(h.name)}" data-state="${esc(h.state)}" transform="translate(0,${y})">` +
      `<title>${esc(tip)}</title><rect class="bg" width="${width}" height="${rowH}"></rect>` +
      `<text class="lbl" x="14" y="${rowH - 4}">${esc(h.name.length > 22 ? h.name.slice(0, 21) + "…" : h.name)}</text>` +
      bars.join("") + `</g>`
    );
  }

  function drawAxis(width, label, span, x, now, etaEnd) {
    const steps = [1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800];
    const step = steps.find((s) => span / s <= 10) || 604800;
    const unit = step >= 3600 ? [3600, "h"] : step >= 60 ? [60, "min"] : [1, "s"];
    const ticks = [];
    for (let t = 0; t <= span; t += step) {
      ticks.push(`<line x1="${x(t)}" x2="${x(t)}" y1="14" y2="22"></line><text x="${x(t) + 2}" y="12">${+(t / unit[0]).toFixed(1)} ${unit[1]}</text>`);
    }
    const axis = $("s-axis");
    axis.setAttribute("width", width);
    axis.innerHTML =
      `<g class="axis"><text x="4" y="12">since start</text>${ticks.join("")}` +
      `<text x="${x(now) + 2}" y="21">now</text>` +
      (etaEnd !== null && etaEnd > now ? `<text x="${x(etaEnd) + 2}" y="21">ETA</text>` : "") +
      `</g>`;
  }

  start();
})();
