// A little JavaScript for the inspect and onboard pages: the JSON API, the page's CSRF token.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function show(el, visible) { if (el) el.classList.toggle("hidden", !visible); }

async function apiError(response) {
  try {
    const body = await response.json();
    return `${body.code}: ${body.message}`;
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : (Array.isArray(text) ? text.join(", ") : String(text));
  row.appendChild(td);
}

function fmt(x, digits) { return x === null || x === undefined ? "" : Number(x).toPrecision(digits); }

// -- inspect ------------------------------------------------------------------------------
function renderInspection(result) {
  const verdict = document.getElementById("verdict");
  verdict.textContent = result.verdict;
  verdict.className = `verdict verdict-${result.verdict}`;
  document.getElementById("score").textContent = fmt(result.score, 4);
  document.getElementById("calibrated").textContent =
    result.calibrated_score === null || result.calibrated_score === undefined ? "" : result.calibrated_score.toFixed(2);
  document.getElementById("model-ref").textContent = `${result.model.name} v${result.model.version}`;
  const link = document.getElementById("record-link");
  link.textContent = result.inspection_id.slice(0, 8);
  link.href = `/records/${encodeURIComponent(result.inspection_id)}`;
  document.getElementById("reasons").textContent = (result.reasons || []).join("; ");
  const overlay = document.getElementById("overlay");
  overlay.src = result.overlay_png_base64 ? `data:image/png;base64,${result.overlay_png_base64}` : "";
  const body = document.querySelector("#regions tbody");
  body.replaceChildren();
  (result.regions || []).forEach((r, i) => {
    const row = document.createElement("tr");
    [i + 1, r.bbox, r.area_px, fmt(r.length_px, 4), fmt(r.width_px, 4), fmt(r.max_score, 4), fmt(r.contrast, 3), r.polarity]
      .forEach((v) => cell(row, v));
    body.appendChild(row);
  });
  if (!(result.regions || []).length) {
    const row = document.createElement("tr");
    row.className = "empty";
    const td = document.createElement("td");
    td.colSpan = 8;
    td.textContent = "no regions reported";
    row.appendChild(td);
    body.appendChild(row);
  }
}

async function inspectFile(file) {
  const model = document.getElementById("model-select").value;
  const error = document.getElementById("inspect-error");
  const form = new FormData();
  form.append("image", file);
  form.append("part_id", document.getElementById("part-id").value);
  show(document.getElementById("result"), true);
  show(error, false);
  document.getElementById("verdict").textContent = "…";
  const url = `/api/v1/models/${encodeURIComponent(model)}/score?return_overlay=true`;
  const response = await fetch(url, {method: "POST", body: form, headers: {"X-CSRFToken": csrfToken()},
                                     credentials: "same-origin"});
  const body = await response.json().catch(() => null);
  if (body && body.verdict) {  // 200, or 409 with verdict ALIGNMENT_FAILED (also recorded)
    renderInspection(body);
    show(document.getElementById("result-body"), true);
  }
  if (!response.ok) {
    error.textContent = body ? `${body.code}: ${body.message}` : `HTTP ${response.status}`;
    show(error, true);
    if (!body || !body.verdict) show(document.getElementById("result-body"), false);
  }
}

function setUpInspect() {
  const form = document.getElementById("inspect-form");
  if (!form) return;
  const input = document.getElementById("image-input");
  const zone = document.getElementById("drop-zone");
  input.addEventListener("change", () => { if (input.files.length) inspectFile(input.files[0]); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.files.length) inspectFile(input.files[0]);
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) inspectFile(event.dataTransfer.files[0]);
  });
}

// -- training progress -----------------------------------------------------------------------
async function followJob(statusUrl, model, onDone) {
  const started = Date.now();
  for (;;) {
    const response = await fetch(statusUrl, {credentials: "same-origin"});
    if (!response.ok) { onDone(null, await apiError(response)); return; }
    const job = await response.json();
    const stage = document.getElementById("job-stage");
    if (stage) stage.textContent = job.stage;
    const status = document.getElementById("job-status");
    if (status) status.textContent = job.status;
    const bar = document.getElementById("job-progress");
    if (bar) bar.value = job.progress;
    const elapsed = document.getElementById("job-elapsed");
    if (elapsed) elapsed.textContent = Math.round((Date.now() - started) / 1000);
    const message = document.getElementById("job-message");
    if (message) message.textContent = job.message || "";
    if (job.status === "succeeded" || job.status === "failed") { onDone(job, null); return; }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function versionUrl(model, version) {
  return `/models/${encodeURIComponent(model)}/${version}`;
}

function setUpOnboard() {
  const form = document.getElementById("onboard-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("onboard-error");
    show(error, false);
    const data = new FormData(form);
    const name = data.get("name");
    const params = {};
    if (data.get("image_size")) params.image_size = Number(data.get("image_size"));
    try {
      Object.assign(params, JSON.parse(data.get("params") || "{}"));
    } catch (e) {
      error.textContent = "parameters must be a JSON object"; show(error, true); return;
    }
    const upload = new FormData();
    upload.append("detector", data.get("detector"));
    upload.append("params", JSON.stringify(params));
    upload.append("promote", "false");
    for (const file of document.getElementById("onboard-images").files) upload.append("images", file);
    show(document.getElementById("onboard-progress"), true);
    document.getElementById("job-stage").textContent = "uploading";
    const response = await fetch(`/api/v1/models/${encodeURIComponent(name)}/versions`, {
      method: "POST", body: upload, headers: {"X-CSRFToken": csrfToken()}, credentials: "same-origin"});
    if (!response.ok) {
      error.textContent = await apiError(response); show(error, true);
      show(document.getElementById("onboard-progress"), false);
      return;
    }
    const job = await response.json();
    followJob(job.status_url, name, (done, problem) => {
      if (done && done.status === "succeeded") {
        window.location.href = versionUrl(name, done.version);
      } else {
        error.textContent = problem || `${done.error_code}: ${done.message}`; show(error, true);
      }
    });
  });
}

function setUpJobPage() {
  const section = document.getElementById("job");
  if (!section || section.dataset.active !== "true") return;
  followJob(section.dataset.jobUrl, section.dataset.model, (done) => {
    if (done && done.status === "succeeded") window.location.href = versionUrl(section.dataset.model, done.version);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpInspect();
  setUpOnboard();
  setUpJobPage();
});
