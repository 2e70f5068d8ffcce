// The Margo catalog's only script. No framework, no build step, no inline code.
// With auth on, the token lives in this variable only: never in storage or cookies.
"use strict";
(function () {
  let token = null;
  const body = () => document.body;
  const authOn = () => body().dataset.auth === "on";

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  // Pages are fetched with the token and their <main> swapped in (server-rendered,
  // already escaped; scripts inside innerHTML never run, and the CSP forbids inline).
  async function load(url, push) {
    const resp = await fetch(url, { headers: headers() });
    const text = await resp.text();
    const doc = new DOMParser().parseFromString(text, "text/html");
    const main = doc.getElementById("main");
    if (!main) return;
    document.getElementById("main").replaceWith(document.adoptNode(main));
    document.title = doc.title;
    if (push) history.pushState({}, "", url);
    wire();
    const h1 = document.querySelector("main h1");
    if (h1) { h1.setAttribute("tabindex", "-1"); h1.focus(); }
  }

  async function login(ev) {
    ev.preventDefault();
    const form = ev.target;
    const err = document.getElementById("login-error");
    err.textContent = "";
    const data = new URLSearchParams();
    data.set("grant_type", "password");
    data.set("username", form.username.value);
    data.set("password", form.password.value);
    try {
      const resp = await fetch(body().dataset.tokenPath, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: data.toString(),
      });
      const json = await resp.json();
      const t = json.access_token || json.token;
      if (!resp.ok || !t) { err.textContent = "Sign-in failed: " + (json.error_description || json.error || resp.status); return; }
      token = t;
      const who = document.getElementById("who");
      if (who) who.textContent = "Signed in as " + form.username.value;
      await load(location.pathname + location.search, false);
    } catch (e) {
      err.textContent = "Sign-in failed: " + e;
    }
  }

  async function icons() {
    for (const img of document.querySelectorAll("img[data-src]")) {
      try {
        const resp = await fetch(img.dataset.src, { headers: headers() });
        if (!resp.ok) continue;
        img.src = URL.createObjectURL(await resp.blob());
        img.removeAttribute("data-src");
      } catch (e) { /* the alt text stays */ }
    }
  }

  const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

  // Builds the JSON body by hand so numbers keep their decimals as typed ("1.50").
  function element(kind, text) {
    const t = text.trim();
    if (kind === "integer" || kind === "double") return NUMBER.test(t) ? t : JSON.stringify(t);
    if (kind === "boolean") return t === "true" || t === "false" ? t : JSON.stringify(t);
    return JSON.stringify(text);
  }

  function fieldJson(el) {
    const kind = el.dataset.kind;
    if (el.dataset.multi) {
      const items = el.tagName === "SELECT"
        ? Array.from(el.selectedOptions).map((o) => o.value)
        : el.value.split("\n").filter((l) => l.trim() !== "");
      return "[" + items.map((i) => element(kind, i)).join(",") + "]";
    }
    if (el.value === "") return kind === "string" ? '""' : "null";
    return element(kind, el.value);
  }

  async function check(ev) {
    ev.preventDefault();
    const form = ev.target;
    const parts = [];
    for (const el of form.querySelectorAll("[data-kind]")) {
      parts.push(JSON.stringify(el.name) + ":" + fieldJson(el));
    }
    const status = document.getElementById("config-status");
    const list = document.getElementById("config-errors");
    const table = document.getElementById("resolved");
    for (const p of form.querySelectorAll(".violation")) p.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    list.replaceChildren();
    status.textContent = "Checking…";
    let json;
    try {
      const resp = await fetch(form.dataset.action, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: "{" + parts.join(",") + "}",
      });
      json = await resp.json();
    } catch (e) {
      status.textContent = "The check failed: " + e;
      return;
    }
    if (json.errors) {
      status.textContent = json.errors.map((e) => e.message).join("; ");
      return;
    }
    status.textContent = json.valid ? "Valid configuration." : json.violations.length + " problem(s) found.";
    status.className = json.valid ? "status ok" : "status bad";
    for (const v of json.violations) {
      const li = document.createElement("li");
      li.textContent = v.message + " [" + v.rule + "]";
      list.appendChild(li);
      const slot = form.querySelector('.violation[data-for="' + CSS.escape(v.parameter) + '"]');
      if (slot) {
        slot.textContent = (slot.textContent ? slot.textContent + " " : "") + v.message + " [" + v.rule + "]";
        const input = slot.parentElement.querySelector("[data-kind]");
        if (input) input.setAttribute("aria-invalid", "true");
      }
    }
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    for (const c of json.resolved) {
      for (const t of c.targets) {
        const tr = document.createElement("tr");
        for (const cell of [c.profile + " (" + c.profileType + ")", c.component, t.pointer, JSON.stringify(t.value)]) {
          const td = document.createElement("td");
          td.textContent = cell;
          tr.appendChild(td);
        }
        tbody.appendChild(tr);
      }
    }
    table.hidden = tbody.children.length === 0;
  }

  function wire() {
    const loginForm = document.getElementById("login");
    if (loginForm) loginForm.addEventListener("submit", login);
    const config = document.getElementById("config");
    if (config) config.addEventListener("submit", check);
    if (token) {
      const search = document.getElementById("search");
      if (search) search.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams(new FormData(search)).toString();
        load("/catalog/?" + q, true);
      });
      for (const a of document.querySelectorAll("a[data-nav]")) {
        a.addEventListener("click", (ev) => { ev.preventDefault(); load(a.getAttribute("href"), true); });
      }
      icons();
    }
  }

  window.addEventListener("popstate", () => { if (token) load(location.pathname + location.search, false); });
  document.addEventListener("DOMContentLoaded", () => { if (!authOn() || token) wire(); else wire(); });
})();
