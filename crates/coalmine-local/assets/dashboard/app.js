// The dashboard page: polls the admin API once a second and draws the
// rollout with uPlot. Its requests are relative to the page's address, so
// the same page serves a run at `/` and a listed Canary at `/c/NS/NAME/`. Text from the API goes into the page as text
// (textContent), never as HTML. Commands post to the same paths as the
// CLI, with a JSON content type (the admin API refuses form types) and
// the bearer token when the API requires one.
"use strict";
(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  const state = {
    info: null,
    status: null,
    token: null,
    history: [],
    traffic: [],
    historyAfter: 0,
    trafficAfter: 0,
    charts: {},
    lastOk: 0,
  };
  // For people poking at the page, and for the browser test.
  window.coalmineCharts = state.charts;

  class NeedToken extends Error {}

  function readToken() {
    // `#token=…` in the address: kept for this tab, then removed from the
    // address bar (a fragment never reaches the server).
    const m = location.hash.match(/^#token=(.+)$/);
    if (m) {
      sessionStorage.setItem("coalmine-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname);
    }
    return sessionStorage.getItem("coalmine-token");
  }

  async function api(path, method) {
    const headers = { accept: "application/json" };
    if (state.token) headers.authorization = "Bearer " + state.token;
    const init = { method: method || "GET", headers, cache: "no-store", credentials: "omit" };
    if (init.method === "POST") {
      headers["content-type"] = "application/json";
      init.body = "{}";
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) throw new NeedToken("the admin API needs its token");
    if (!resp.ok) throw new Error(path + ": " + resp.status + " " + (await resp.text()).trim());
    return resp.json();
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function seconds(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    return Math.floor(m / 60) + "h " + (m % 60) + "m";
  }

  function stepLabel(step) {
    if (step.setWeight !== undefined) return step.setWeight + "%";
    if (step.pause !== undefined) return step.pause.duration ? "pause " + step.pause.duration : "pause until promoted";
    if (step.analysis !== undefined) return "analysis";
    if (step.setHeaderRoute !== undefined) return "header route";
    if (step.setMirror !== undefined) return "mirror " + step.setMirror.percent + "%";
    return Object.keys(step)[0] || "?";
  }

  const ACTIVE = ["Progressing", "Paused"];
  const ENDED_BAD = ["RolledBack", "RollingBack", "Failed"];
  const ALLOWED = {
    promote: ACTIVE,
    "promote-full": ACTIVE,
    pause: ["Progressing"],
    resume: ["Paused"],
    abort: ACTIVE,
    retry: ["RolledBack", "Failed"],
  };
  const CONFIRM = {
    promote: "Promote: skip the current step (a pause or a gate) and go on with the next?",
    "promote-full": "Promote fully: skip every remaining step and make the canary stable now?",
    pause: "Pause the rollout at its current weight?",
    resume: "Resume the rollout?",
    abort: "Abort: send all traffic back to stable and roll the canary back?",
    retry: "Retry: start the rollout of this canary again from the first step?",
  };

  function renderStatus() {
    const s = state.status;
    const info = state.info;
    if (!s || !info) return;
    $("name").textContent = info.label || info.name;
    const phase = $("phase");
    phase.textContent = s.phase;
    phase.className = "phase phase-" + s.phase;
    document.title = info.name + " · " + s.phase + " · coalmine";
    $("weight").textContent = s.weight + "%";
    const n = Array.isArray(info.steps) ? info.steps.length : 0;
    $("step").textContent = Math.min(s.step, n) + " of " + n + " done";
    $("in-step").textContent =
      s.stepStartedAt && ACTIVE.includes(s.phase) ? seconds(Date.now() - Date.parse(s.stepStartedAt)) : "–";
    $("stable-rev").textContent = s.stableRevision || "–";
    $("canary-rev").textContent = s.canaryRevision || "–";
    $("message").textContent = s.message || "";

    const reason = $("reason");
    if (s.rollback && ENDED_BAD.includes(s.phase)) {
      reason.textContent = "Rolled back: " + s.rollback.message;
      reason.hidden = false;
    } else {
      reason.hidden = true;
    }
    const problem = $("problem");
    problem.hidden = !s.stateError;
    problem.textContent = s.stateError ? "The state file cannot be written: " + s.stateError : "";

    const steps = $("steps");
    steps.replaceChildren();
    (info.steps || []).forEach((step, i) => {
      const li = el("li", "", stepLabel(step));
      if (s.phase === "Promoted" || s.phase === "Promoting" || i < s.step) li.className = "done";
      else if (i === s.step && ACTIVE.includes(s.phase)) li.className = "current";
      else if (i === s.step && ENDED_BAD.includes(s.phase)) li.className = "failed";
      if (li.className === "current" || li.className === "failed") li.setAttribute("aria-current", "step");
      steps.appendChild(li);
    });

    document.querySelectorAll("button[data-action]").forEach((b) => {
      b.disabled = !ALLOWED[b.dataset.action].includes(s.phase);
    });
  }

  function renderEvents(events) {
    const list = $("events");
    list.replaceChildren();
    events
      .slice()
      .reverse()
      .forEach((e) => {
        const li = el("li", e.type === "Warning" ? "Warning" : "Normal");
        const t = el("time", "", new Date(Date.parse(e.at)).toLocaleTimeString());
        t.dateTime = e.at;
        li.append(t, el("span", "why", e.reason), el("span", "", e.message));
        if (e.command) li.append(el("span", "identity", " (command " + e.command + ")"));
        list.appendChild(li);
      });
  }

  function chart(key, container, opts, data) {
    let u = state.charts[key];
    if (!u) {
      const width = Math.max(300, container.clientWidth || 480);
      // The legend names the series; values show on hover only.
      const base = { width, height: 200, legend: { live: false } };
      u = new uPlot(Object.assign(base, opts), data, container);
      state.charts[key] = u;
    } else {
      u.setData(data);
    }
    let points = 0;
    for (let i = 1; i < data.length; i++) points = Math.max(points, data[i].filter((v) => v != null).length);
    container.dataset.points = String(points);
  }

  const line = (label, stroke, extra) =>
    Object.assign({ label, stroke, width: 2, points: { show: true, size: 4 } }, extra || {});
  const guide = (label, stroke) => ({ label, stroke, width: 1, dash: [6, 4], points: { show: false } });

  function metricBox(name) {
    const id = "metric-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
    let box = $(id);
    if (box) return box;
    box = el("div", "metric");
    box.id = id;
    const h = el("h3", "", name + " ");
    h.appendChild(el("span", "verdict", ""));
    box.appendChild(h);
    box.appendChild(el("p", "facts", ""));
    const charts = el("div", "charts");
    const f1 = el("figure");
    f1.append(el("figcaption", "", "Evidence against the canary (e-value, log scale) and the rollback threshold"));
    const c1 = el("div", "chart evidence");
    f1.appendChild(c1);
    const f2 = el("figure");
    f2.append(el("figcaption", "", "Bad-event rate ratio canary/stable, its anytime-valid interval, and maxRatio"));
    const c2 = el("div", "chart ratio");
    f2.appendChild(c2);
    charts.append(f1, f2);
    box.appendChild(charts);
    $("metrics").appendChild(box);
    return box;
  }

  function renderMetrics() {
    const info = state.info;
    if (!info) return;
    const xs = state.history.map((h) => Date.parse(h.at) / 1000);
    info.metrics.forEach((m) => {
      const box = metricBox(m.name);
      const of = state.history.map((h) => (h.metrics || []).find((x) => x.name === m.name) || {});
      const last = of.length ? of[of.length - 1] : {};
      const verdict = box.querySelector(".verdict");
      verdict.textContent = last.verdict || "";
      verdict.className = "verdict verdict-" + (last.verdict || "none");
      const facts = [];
      if (last.ratio != null) facts.push("ratio " + last.ratio.toFixed(2));
      if (last.ratioInterval) facts.push("interval [" + last.ratioInterval.map((v) => fmt(v)).join(", ") + "]");
      if (last.eValue != null) facts.push("e " + fmt(last.eValue) + " of " + fmt(last.eThreshold));
      if (last.canaryRequests != null) facts.push("canary " + last.canaryEvents + " bad of " + last.canaryRequests);
      if (last.stableRequests != null) facts.push("stable " + last.stableEvents + " bad of " + last.stableRequests);
      if (last.value != null) facts.push("value " + fmt(last.value));
      if (last.message) facts.push(last.message);
      box.querySelector(".facts").textContent = facts.join(" · ");

      // A log scale has no zero: tiny e-values sit on the floor.
      const ev = of.map((x) => (x.eValue == null ? null : Math.max(x.eValue, 1e-3)));
      const threshold = of.map((x) => (x.eThreshold == null ? null : x.eThreshold));
      chart(
        m.name + ":evidence",
        box.querySelector(".evidence"),
        {
          scales: { x: { time: true }, y: { distr: 3 } },
          series: [{}, line("e-value", "#c0392b"), guide("rollback threshold", "#555")],
        },
        [xs, ev, threshold],
      );
      const maxRatio = m.maxRatio == null ? 1 : m.maxRatio;
      // An unbounded upper end is drawn just above the largest estimate,
      // which keeps the rest readable.
      const seen = of.map((x) => x.ratio).filter((v) => v != null && isFinite(v));
      const cap = Math.max(5 * maxRatio, 5, 1.5 * Math.max(0, ...seen));
      const clip = (v) => (v == null || !isFinite(v) ? null : Math.min(v, cap));
      chart(
        m.name + ":ratio",
        box.querySelector(".ratio"),
        {
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, maxRatio * 1.2)] } },
          series: [
            {},
            line("ratio", "#2471a3"),
            { label: "lower bound", stroke: "#85c1e9", width: 1, points: { show: false } },
            { label: "upper bound", stroke: "#85c1e9", width: 1, points: { show: false } },
            guide("maxRatio", "#c0392b"),
          ],
          bands: [{ series: [3, 2], fill: "rgba(36,113,163,0.15)" }],
        },
        [
          xs,
          of.map((x) => clip(x.ratio)),
          of.map((x) => (x.ratioInterval ? clip(x.ratioInterval[0]) : null)),
          of.map((x) => (x.ratioInterval ? clip(x.ratioInterval[1]) : null)),
          of.map(() => maxRatio),
        ],
      );
    });
  }

  function fmt(v) {
    if (v == null) return "–";
    if (!isFinite(v) || v >= 1e6) return "∞";
    if (Math.abs(v) >= 100) return v.toFixed(0);
    if (Math.abs(v) >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function renderTraffic() {
    const xs = state.traffic.map((t) => t.at / 1000);
    const opts = (a, b) => ({
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      series: [{}, line(a, "#1e8449"), line(b, "#ca6f1e")],
    });
    chart("requests", $("chart-requests"), opts("stable req/s", "canary req/s"), [
      xs,
      state.traffic.map((t) => t.stableRps),
      state.traffic.map((t) => t.canaryRps),
    ]);
    chart("failures", $("chart-failures"), opts("stable failures/s", "canary failures/s"), [
      xs,
      state.traffic.map((t) => t.stableFailures),
      state.traffic.map((t) => t.canaryFailures),
    ]);
  }

  function renderIdentity() {
    const info = state.info;
    if (info.listUrl) {
      $("back").href = info.listUrl;
      $("back").hidden = false;
    }
    $("identity").textContent = info.actingAs
      ? "Buttons act as " + info.actingAs + "; the events name each command's id."
      : info.tokenRequired
      ? "Buttons act as the holder of the admin token this tab was given; the events name each command's id."
      : "Buttons act without a token, as anyone on this machine who can reach " +
        info.admin +
        " (the admin API accepts loopback requests from this page only); the events name each command's id.";
  }

  async function act(action) {
    if (!window.confirm(CONFIRM[action])) return;
    const out = $("action-result");
    try {
      const r = await api(action, "POST");
      out.textContent = "Sent " + r.accepted + " (command " + r.id + ").";
    } catch (e) {
      out.textContent = "Could not send " + action + ": " + e.message;
    }
    poll();
  }

  let timer = null;
  let polling = false;
  async function poll() {
    clearTimeout(timer);
    if (polling) return;
    polling = true;
    try {
      if (!state.info) {
        state.info = await api("dashboard/info");
        renderIdentity();
        $("traffic").hidden = true;
      }
      const [status, events, hist, traffic] = await Promise.all([
        api("status"),
        api("events"),
        api("history?after=" + state.historyAfter),
        api("traffic?after=" + state.trafficAfter),
      ]);
      state.status = status;
      // A restarted server numbers its series afresh.
      if (hist.length && hist[0].seq <= state.historyAfter) state.history = [];
      if (traffic.length && traffic[0].seq <= state.trafficAfter) state.traffic = [];
      state.history = state.history.concat(hist).slice(-2000);
      state.traffic = state.traffic.concat(traffic).slice(-3600);
      if (hist.length) state.historyAfter = hist[hist.length - 1].seq;
      if (traffic.length) state.trafficAfter = traffic[traffic.length - 1].seq;
      // Shown once there is something to draw (in Kubernetes, from the
      // judge's second report on).
      $("traffic").hidden = !state.info.traffic || !state.traffic.length;
      renderStatus();
      renderEvents(events);
      renderMetrics();
      if (state.info.traffic) renderTraffic();
      state.lastOk = Date.now();
      $("token-form").hidden = true;
      $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
      $("live").className = "live";
    } catch (e) {
      if (e instanceof NeedToken) {
        $("token-form").hidden = false;
      }
      $("live").textContent = "not updating: " + e.message;
      $("live").className = "live down";
    } finally {
      polling = false;
      timer = setTimeout(poll, POLL_MS);
    }
  }

  $("token-save").addEventListener("click", () => {
    const t = $("token-input").value.trim();
    if (!t) return;
    sessionStorage.setItem("coalmine-token", t);
    state.token = t;
    $("token-input").value = "";
    poll();
  });
  document.querySelectorAll("button[data-action]").forEach((b) => {
    b.addEventListener("click", () => act(b.dataset.action));
  });

  // Charts follow the width of their column.
  window.addEventListener("resize", () => {
    for (const u of Object.values(state.charts)) {
      const width = Math.max(300, u.root.parentElement.clientWidth || 480);
      u.setSize({ width, height: 200 });
    }
  });

  state.token = readToken();
  poll();
})();
