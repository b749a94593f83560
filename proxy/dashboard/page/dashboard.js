// The migration dashboard's only script: keep the admin token in this tab, poll the
// server-rendered live part and swap it in, and run the advance / rollback dialog.
// No framework and no build step: the server renders the page, this only moves it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const prefix = document.body.dataset.prefix;
  const pollMs = Number(document.body.dataset.poll) || 1500;
  const KEY = "strangler-admin-token";
  const live = $("live");
  const dialog = $("step");
  let timer = null;
  let pending = null; // the step the dialog is about: {action, capability, from, to}
  let checking = null; // the gate check in flight, if any (the server runs one at a time)
  let checkAgain = false; // the percentage changed while it ran: check once more after it
  let debounce = null;
  const DEBOUNCE_MS = 600; // typing "50" in the percentage asks once, not for "5" and "50"

  // `strangler up` may print the URL with #token=...: browsers never send what follows '#'.
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem(KEY);

  function call(path, options = {}) {
    const headers = { Authorization: `Bearer ${token()}` };
    if (options.body) headers["Content-Type"] = "application/json";
    return fetch(prefix + path, { ...options, headers, cache: "no-store" });
  }

  async function problemOf(response) {
    try {
      const problem = await response.json();
      return { text: problem.detail + (problem.hint ? ` (${problem.hint})` : ""), problem };
    } catch {
      return { text: `${response.status} ${response.statusText}`, problem: null };
    }
  }

  function say(message) {
    $("problem").textContent = message || "";
    $("problem").hidden = !message;
  }

  function showLogin(message) {
    clearTimeout(timer);
    live.replaceChildren();
    $("login").hidden = false;
    $("forget").hidden = true;
    $("updated").textContent = "not connected";
    say(message);
    $("token").focus();
  }

  async function poll() {
    clearTimeout(timer);
    if (!token()) return showLogin("");
    if (document.hidden) return; // a background tab costs the proxy nothing; see below
    try {
      const response = await call("/live");
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        return showLogin("The proxy refused that token.");
      }
      if (!response.ok) throw new Error((await problemOf(response)).text);
      const html = await response.text();
      // Keep the diffs the reader opened open across the swap.
      const open = new Set([...live.querySelectorAll("details[open]")].map((d) => d.dataset.key));
      live.innerHTML = html; // rendered and escaped by the server (proxy/dashboard/render.py)
      live.querySelectorAll("details").forEach((d) => { d.open = open.has(d.dataset.key); });
      $("login").hidden = true;
      $("forget").hidden = false;
      $("updated").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      say("");
    } catch (error) {
      say(`Cannot read the proxy: ${error.message}. Retrying.`);
    }
    timer = setTimeout(poll, pollMs);
  }

  function showGates(gates) {
    const rows = gates.map((gate) => {
      const row = document.createElement("tr");
      for (const [text, cls] of [
        [gate.name, ""],
        [gate.passed ? "pass" : "FAIL", gate.passed ? "ok" : "bad"],
        [gate.evidence, "small"],
      ]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (cls) cell.className = cls;
        row.append(cell);
      }
      return row;
    });
    const table = document.createElement("table");
    table.className = "gates";
    table.append(...rows);
    $("step-gates").replaceChildren(table);
  }

  function percent() {
    const value = $("step-percent").value;
    return $("step-percent-row").hidden || value === "" ? null : Number(value);
  }

  // The gates of the step the dialog shows. A check may run a reconcile and takes the
  // capability's turn on the server, so at most one is in flight from this page: a change
  // meanwhile asks again once it is done.
  function preview() {
    if (checking) {
      checkAgain = true;
      $("step-confirm").disabled = true;
      $("step-note").textContent = "Checking the gates (a reconcile can take a few seconds) …";
      return checking;
    }
    checking = checkGates().finally(() => {
      checking = null;
      const again = checkAgain;
      checkAgain = false;
      if (again && pending && pending.action === "advance") preview();
    });
    return checking;
  }

  async function checkGates() {
    const asked = pending;
    const raise = asked.from === "canary" && percent() !== null;
    const query = raise ? `?percent=${percent()}` : "";
    $("step-confirm").disabled = true;
    $("step-note").textContent = "Checking the gates (a reconcile can take a few seconds) …";
    $("step-gates").replaceChildren();
    try {
      const response = await call(`/capabilities/${encodeURIComponent(asked.capability)}/gates${query}`);
      if (asked !== pending) return; // the dialog moved on meanwhile
      if (!response.ok) {
        $("step-note").textContent = (await problemOf(response)).text;
        return;
      }
      const result = await response.json();
      if (asked !== pending) return;
      $("step-title").textContent = `Advance ${result.title.replace(" -> ", " → ")}`;
      showGates(result.gates);
      $("step-note").textContent = result.passed
        ? "Every gate passes."
        : "A gate fails: the step is refused until it passes (forcing is only for the CLI: strangler advance --force --reason …).";
      $("step-confirm").disabled = !result.passed;
    } catch (error) {
      if (asked !== pending) return;
      $("step-note").textContent =
        `Cannot check the gates: ${error.message}. Close the dialog and try again.`;
    }
  }

  function previewSoon() {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      if (pending && pending.action === "advance" && pending.from === "canary") preview();
    }, DEBOUNCE_MS);
  }

  function openStep(data) {
    clearTimeout(debounce);
    pending = { action: data.action, capability: data.capability, from: data.from, to: data.to };
    const advancing = pending.action === "advance";
    $("step-title").textContent =
      `${advancing ? "Advance" : "Roll back"} ${pending.capability}: ${pending.from} → ${pending.to}`;
    $("step-note").textContent = advancing ? "" : data.note || "";
    $("step-gates").replaceChildren();
    $("step-result").textContent = "";
    $("step-result").className = "";
    $("step-reason").value = "";
    $("step-percent-row").hidden = !(advancing && (pending.to === "canary" || pending.from === "canary"));
    $("step-percent").value = pending.to === "canary" ? "10" : "";
    $("step-percent").placeholder = pending.from === "canary" ? `empty: on to ${pending.to}` : "";
    $("step-confirm").textContent = advancing ? "Advance" : "Roll back";
    $("step-confirm").className = advancing ? "primary" : "danger";
    $("step-confirm").disabled = advancing;
    dialog.showModal();
    if (advancing) preview();
  }

  async function confirmStep() {
    const asked = pending;
    $("step-confirm").disabled = true;
    $("step-result").className = "muted";
    $("step-result").textContent = "Working …";
    const body = { from_phase: asked.from, reason: $("step-reason").value || null };
    if (asked.action === "advance") body.percent = percent();
    const path = `/capabilities/${encodeURIComponent(asked.capability)}/${asked.action}`;
    try {
      const response = await call(path, { method: "POST", body: JSON.stringify(body) });
      if (response.ok) {
        const done = await response.json();
        const paused = done.write_switch
          ? `; writes paused ${Math.round(done.write_switch.paused_ms)} ms while they moved`
          : "";
        $("step-result").className = "ok";
        $("step-result").textContent =
          `Done: ${done.capability} ${done.from} → ${done.to} (config version ${done.config_version})${paused}.`;
        if (done.gates) showGates(done.gates);
      } else {
        const { text, problem } = await problemOf(response);
        $("step-result").className = "bad";
        $("step-result").textContent = text;
        if (problem && problem.gates) showGates(problem.gates);
      }
    } catch (error) {
      // No answer at all: the step may or may not have been taken. Say so, and let the
      // operator look (the page keeps polling) and try again.
      $("step-result").className = "bad";
      $("step-result").textContent =
        `No answer from the proxy (${error.message}): the step may or may not have been taken; ` +
        "check the phase on the page before trying again.";
      $("step-confirm").disabled = false;
    }
    poll();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && !button.disabled) openStep(button.dataset);
  });
  $("step-confirm").addEventListener("click", confirmStep);
  $("step-cancel").addEventListener("click", () => {
    clearTimeout(debounce);
    pending = null;
    dialog.close();
  });
  $("step-percent").addEventListener("input", previewSoon);
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    poll();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
})();
