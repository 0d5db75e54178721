// The registry_restore trigger form, filled in from a deleted image's row. Airflow 3.3's own
// trigger dialog cannot be opened pre-filled from a URL (it pre-fills only from an earlier run),
// so this form is built from the DAG's declared Params (GET /api/v2/dags/registry_restore/details:
// titles, descriptions, types, enums) and posts to Airflow's REST API with the user's own session
// (POST /api/v2/dags/registry_restore/dagRuns), where Airflow validates the Params as its own
// form would. Nothing here bypasses Airflow's permissions.
"use strict";

const PAGE = window.REGISTRY_PAGE;
const DAG = "registry_restore";
const api = (path) => PAGE.airflow + "/api/v2" + path;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function types(schema) {
  const t = schema && schema.type;
  return Array.isArray(t) ? t : t ? [t] : ["string"];
}

function field(name, param, given) {
  const schema = param.schema || {};
  const title = schema.title || name;
  const help = param.description || schema.description || "";
  const value = given !== null ? given : param.value;
  const id = "param-" + name;
  let input;
  if (Array.isArray(schema.enum)) {
    input = el("select", {id, name}, schema.enum.map((v) => el("option", {value: v, selected: v === value}, v)));
  } else if (types(schema).includes("boolean")) {
    input = el("input", {id, name, type: "checkbox", checked: value === true || value === "true"});
  } else {
    input = el("input", {id, name, type: "text", value: value ?? "", placeholder: types(schema).includes("null") ? "(empty)" : ""});
  }
  return el("div", {class: "field"}, el("label", {for: id}, title), input, help ? el("div", {class: "help"}, help) : null);
}

function conf(form, params) {
  const out = {};
  for (const [name, param] of Object.entries(params)) {
    const input = form.elements[name];
    const t = types(param.schema);
    if (input.type === "checkbox") out[name] = input.checked;
    else if (input.value === "" && t.includes("null")) out[name] = null;
    else if (t.includes("integer")) out[name] = Number.parseInt(input.value, 10);
    else out[name] = input.value;
  }
  return out;
}

async function main() {
  const root = document.getElementById("restore");
  const status = document.getElementById("status");
  const given = new URLSearchParams(location.search);
  const resp = await fetch(api(`/dags/${DAG}/details`), {credentials: "same-origin"});
  if (!resp.ok) {
    status.className = "msg error";
    status.textContent = `Airflow did not give the ${DAG} DAG (HTTP ${resp.status}): is it deployed, and may you see it?`;
    return;
  }
  const dag = await resp.json();
  const params = dag.params || {};
  const form = el("form", {class: "restore", id: "restore-form"});
  for (const [name, param] of Object.entries(params)) form.append(field(name, param, given.has(name) ? given.get(name) : null));
  if (dag.is_paused) {
    form.append(el("div", {class: "msg never_run"}, `${DAG} is paused: the run will be queued and start once it is unpaused.`));
  }
  const submit = el("button", {type: "submit", class: "primary", id: "trigger"}, "Trigger " + DAG);
  form.append(el("p", {}, submit, " ", el("a", {class: "button", href: PAGE.base}, "Back to the Registry page")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    status.className = "msg"; status.textContent = "triggering…";
    const body = {logical_date: null, conf: conf(form, params)};
    const r = await fetch(api(`/dags/${DAG}/dagRuns`), {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json"}, body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    submit.disabled = false;
    if (!r.ok) {
      status.className = "msg error";
      const detail = typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail || answer);
      status.textContent = `Airflow refused the run (HTTP ${r.status}): ${detail}`;
      return;
    }
    status.className = "msg ok";
    status.replaceChildren("Triggered run ", el("a", {id: "run-link", target: "_top",
      href: `${PAGE.airflow}/dags/${DAG}/runs/${encodeURIComponent(answer.dag_run_id)}`}, answer.dag_run_id),
      ` (${answer.state}). Follow it in Airflow.`);
  });
  root.append(form);
}

main();
