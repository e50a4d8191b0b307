// The list of Canaries in Kubernetes: polls `/canaries` once a second and
// shows them by namespace, each linking to its own view. Text from the
// API goes into the page as text (textContent), never as HTML.
"use strict";
(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render(answer) {
    const byNs = new Map();
    for (const c of answer.canaries) {
      if (!byNs.has(c.namespace)) byNs.set(c.namespace, []);
      byNs.get(c.namespace).push(c);
    }
    const root = $("namespaces");
    root.replaceChildren();
    for (const [ns, canaries] of byNs) {
      const section = el("section", "namespace");
      section.dataset.namespace = ns;
      section.appendChild(el("h2", "", ns));
      const table = el("table", "canaries");
      const head = el("tr");
      for (const h of ["Canary", "Phase", "Weight", "Step", "Verdict", "Message"]) head.appendChild(el("th", "", h));
      table.appendChild(head);
      for (const c of canaries) {
        const tr = el("tr");
        tr.dataset.canary = ns + "/" + c.name;
        const link = el("a", "", c.name);
        link.href = "/c/" + encodeURIComponent(ns) + "/" + encodeURIComponent(c.name) + "/";
        const name = el("td");
        name.appendChild(link);
        const phase = el("span", "phase phase-" + c.phase, c.phase);
        const cell = el("td");
        cell.appendChild(phase);
        tr.append(
          name,
          cell,
          el("td", "", c.weight + "%"),
          el("td", "", Math.min(c.step, c.steps) + " of " + c.steps),
          el("td", "verdict-" + (c.verdict || "none"), c.verdict || "–"),
          el("td", "message", c.message || ""),
        );
        table.appendChild(tr);
      }
      section.appendChild(table);
      root.appendChild(section);
    }
    $("empty").hidden = answer.canaries.length > 0;
    $("note").hidden = !answer.note;
    $("note").textContent = answer.note || "";
    $("identity").textContent = "Listed and acted on as " + answer.identity + ".";
  }

  async function poll() {
    try {
      const resp = await fetch("/canaries", { headers: { accept: "application/json" }, cache: "no-store" });
      if (!resp.ok) {
        const why = (await resp.text()).trim();
        $("problem").textContent = why;
        $("problem").hidden = false;
        throw new Error(resp.status + " " + why);
      }
      render(await resp.json());
      $("problem").hidden = true;
      $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
      $("live").className = "live";
    } catch (e) {
      $("live").textContent = "not updating: " + e.message;
      $("live").className = "live down";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  poll();
})();
