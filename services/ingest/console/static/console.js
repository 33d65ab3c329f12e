// ocrstream console: upload, follow page results, boxes, re-decode, downloads. No build step.
"use strict";

const BOX_COLOUR = "#ff00ff"; // magenta: absent from scanned text pages, easy to see (and to test)
const POLL_MS = 400;
const $ = (id) => document.getElementById(id);

const state = { job: null, pages: new Map(), images: new Map(), poll: null, encodeCalls: null, focus: null };

function headers() {
  const key = $("apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function api(path, init = {}) {
  const resp = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (!resp.ok) {
    let detail = resp.statusText;
    try {
      // Ingest errors: {reason, detail}; auth: {detail: {reason, detail}}; OpenAI-style: {error}.
      let body = await resp.json();
      if (body.detail && typeof body.detail === "object") body = body.detail;
      detail = body.reason ? `${body.reason}: ${body.detail}` : JSON.stringify(body.detail || body);
    } catch (_) { /* not JSON */ }
    throw new Error(`${resp.status} ${detail}`);
  }
  return resp;
}

function showError(err) {
  $("error").textContent = err ? String(err.message || err) : "";
  $("error").hidden = !err;
}

async function info() {
  return (await api("/v1/console/info")).json();
}

function fillPrompts(select, prompts, current) {
  select.replaceChildren(...prompts.map((p) => new Option(p, p, false, p === current)));
}

// ---- following a job ------------------------------------------------------------------------
function follow(jobId) {
  clearTimeout(state.poll);
  state.job = { job_id: jobId };
  state.pages = new Map();
  $("pages").replaceChildren();
  $("job").hidden = false;
  for (const id of ["dl-md", "dl-json"]) $(id).classList.add("disabled");
  tick();
}

async function tick() {
  const jobId = state.job.job_id;
  try {
    const have = [...state.pages.keys()].join(",");
    const body = await (await api(`/v1/console/jobs/${jobId}?exclude=${have}`)).json();
    if (state.job.job_id !== jobId) return; // another job was started meanwhile
    state.job = body.job;
    for (const page of body.pages) await showPage(page);
    const j = body.job;
    const total = j.n_pages || 0;
    $("status").textContent =
      `${j.filename || jobId} · ${j.prompt} · ${j.status}` + (total ? ` · ${state.pages.size}/${total} pages` : "");
    $("status").dataset.status = j.status;
    $("bar").max = Math.max(total, 1);
    $("bar").value = state.pages.size;
    if (["completed", "degraded", "failed"].includes(j.status)) {
      if (j.status === "failed") showError(`job failed: ${j.reason}`);
      else await enableDownloads(jobId, j.filename);
      return;
    }
  } catch (err) {
    showError(err);
  }
  state.poll = setTimeout(tick, POLL_MS);
}

async function enableDownloads(jobId, filename) {
  const stem = (filename || jobId).replace(/\.[^.]+$/, "");
  for (const [id, format, ext] of [["dl-md", "markdown", "md"], ["dl-json", "json", "json"]]) {
    const blob = await (await api(`/v1/jobs/${jobId}/result?format=${format}`)).blob();
    const a = $(id);
    if (a.href) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(blob);
    a.download = `${stem}.${ext}`;
    a.classList.remove("disabled");
  }
  $("status").dataset.done = "1";
}

async function pageImage(jobId, n) {
  // Images are per document and mode, shared by every re-decode of it.
  const key = `${state.job.doc_id}/${state.job.mode}/${n}`;
  if (!state.images.has(key)) {
    const blob = await (await api(`/v1/console/jobs/${jobId}/pages/${n}/image`)).blob();
    state.images.set(key, URL.createObjectURL(blob));
  }
  return state.images.get(key);
}

async function showPage(page) {
  const n = page.page;
  state.pages.set(n, page);
  let card = document.querySelector(`.page[data-page="${n}"]`);
  if (!card) {
    card = $("page-tpl").content.firstElementChild.cloneNode(true);
    card.dataset.page = n;
    card.querySelector(".title").textContent = `page ${n}`;
    card.querySelector(".rd-go").addEventListener("click", () => redecode(n, card));
    const siblings = [...$("pages").children];
    const after = siblings.find((c) => Number(c.dataset.page) > n);
    $("pages").insertBefore(card, after || null);
    const img = card.querySelector("img");
    img.addEventListener("load", () => drawBoxes(card));
    img.src = await pageImage(state.job.job_id, n);
  }
  fillPrompts(card.querySelector(".rd-prompt"), state.prompts, page.prompt === "grounding" ? "free_ocr" : "grounding");
  card.querySelector(".markdown").textContent = page.text;
  const t = page.tokens || {};
  card.querySelector(".meta").textContent =
    `${page.method} · prompt ${page.prompt} · vision tokens ${t.vision} · text tokens ${t.text} · ` +
    `cache hit ${page.cache_hit ? "yes" : "no"} · encode ${page.timings_ms.encode} ms · decode ${Math.round(page.timings_ms.decode)} ms` +
    ` · ${(page.boxes || []).length} boxes`;
  card.dataset.boxes = String((page.boxes || []).reduce((k, b) => k + b.boxes.length, 0));
  drawBoxes(card);
  if (state.focus && state.focus.page === n && state.focus.job === state.job.job_id) noteRedecode(card, page);
}

// ---- grounding boxes ------------------------------------------------------------------------------
function drawBoxes(card) {
  const img = card.querySelector("img");
  const canvas = card.querySelector("canvas");
  const page = state.pages.get(Number(card.dataset.page));
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  canvas.style.width = `${img.clientWidth}px`;
  canvas.style.height = `${img.clientHeight}px`;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  card.dataset.drawn = "0";
  if (!$("boxes").checked || !page || !img.naturalWidth) return;
  // Boxes are in page-image pixels; the image is shown scaled.
  const sx = img.clientWidth / img.naturalWidth;
  const sy = img.clientHeight / img.naturalHeight;
  ctx.strokeStyle = BOX_COLOUR;
  ctx.lineWidth = 3;
  ctx.font = "12px sans-serif";
  ctx.fillStyle = BOX_COLOUR;
  let drawn = 0;
  for (const block of page.boxes || []) {
    for (const [x1, y1, x2, y2] of block.boxes) {
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      ctx.fillText(block.label, x1 * sx + 3, Math.max(12, y1 * sy - 3));
      drawn += 1;
    }
  }
  card.dataset.drawn = String(drawn);
}

function redrawAll() {
  document.querySelectorAll(".page").forEach(drawBoxes);
}

// ---- re-decode -------------------------------------------------------------------------------------
async function redecode(n, card) {
  showError(null);
  const prompt = card.querySelector(".rd-prompt").value;
  const form = new FormData();
  form.append("prompt", prompt);
  try {
    const before = (await info()).encode_calls;
    const sub = await (await api(`/v1/jobs/${state.job.job_id}/redecode`, { method: "POST", body: form })).json();
    state.focus = { page: n, job: sub.job_id, prompt, before };
    card.querySelector(".rd-note").textContent = `re-decoding with ${prompt}…`;
    follow(sub.job_id);
  } catch (err) {
    showError(err);
  }
}

async function noteRedecode(card, page) {
  const f = state.focus;
  const after = (await info()).encode_calls;
  const calls = f.before === null || after === null ? "" : ` (encoder calls ${f.before} → ${after})`;
  const how = page.cache_hit && (after === null || after === f.before) ? "cache hit, no encoder call" : "encoded again";
  const note = card.querySelector(".rd-note");
  note.textContent = `re-decoded with ${f.prompt}: ${how}${calls}`;
  note.dataset.encodeCalls = after === null ? "" : String(after - f.before);
  note.dataset.cacheHit = String(Boolean(page.cache_hit));
}

// ---- start -----------------------------------------------------------------------------------------
async function upload(ev) {
  ev.preventDefault();
  showError(null);
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("prompt", $("prompt").value);
  form.append("mode", $("mode").value.trim());
  state.focus = null;
  try {
    const sub = await (await api("/v1/documents", { method: "POST", body: form })).json();
    follow(sub.job_id);
  } catch (err) {
    showError(err);
  }
}

async function main() {
  $("apikey").value = localStorage.getItem("ocrstream-api-key") || "";
  $("apikey").addEventListener("change", () => localStorage.setItem("ocrstream-api-key", $("apikey").value));
  $("upload").addEventListener("submit", upload);
  $("boxes").addEventListener("change", redrawAll);
  window.addEventListener("resize", redrawAll);
  state.prompts = ["free_ocr", "markdown", "grounding"];
  try {
    state.prompts = (await info()).prompts;
  } catch (err) {
    showError(err);
  }
  fillPrompts($("prompt"), state.prompts, "free_ocr");
  document.body.dataset.ready = "1";
}

main();
