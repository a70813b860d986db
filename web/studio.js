// wgsd studio: the page's behaviour. Plain browser JavaScript, no framework, no build step;
// it talks to the server only through the /api/v1 routes (README "Studio and its jobs API").
"use strict";

const STORE_FORM = "wgsd-studio.form";
const STORE_JOB = "wgsd-studio.job";
const STORE_SEED = "wgsd-studio.last-seed";
const HISTORY_PAGE = 50;
const FINAL = new Set(["done", "failed", "cancelled"]);

// A1111's sampler names for the server's scheduler short names (shown in the picker and
// read back from PNG parameters).
const SAMPLER_NAMES = {
  ddim: "DDIM", pndm: "PLMS", euler: "Euler", euler_a: "Euler a", "dpm++2m": "DPM++ 2M", lms: "LMS",
};

const $ = (id) => document.getElementById(id);

const state = {
  options: null,     // GET /api/v1/options
  job: null,         // { id, source, finished } of the job this page follows
  history: [],       // items shown in the gallery, newest first
  historyTotal: 0,
  selected: null,    // { name, url, parameters, params } shown in the viewer
};

// ---------------------------------------------------------------- server calls

class ServerError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// fetch + JSON, turning the server's {"code","type","message"} replies and network
// failures into ServerError with a message a person can read.
async function api(path, init = {}) {
  let reply;
  try {
    reply = await fetch(path, init);
  } catch (e) {
    throw new ServerError(0, "NetworkError", "The server does not answer (is wgsd still running?)");
  }
  const text = await reply.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!reply.ok) {
    const message = (body && (body.message || body.error)) || text.trim() || reply.statusText;
    const type = (body && body.type) || "HTTP";
    throw new ServerError(reply.status, type, message);
  }
  return body;
}

function describe(err, doing) {
  if (err instanceof ServerError && err.status) {
    return `${doing} failed (${err.status} ${err.type}): ${err.message}`;
  }
  return `${doing} failed: ${err.message}`;
}

// ---------------------------------------------------------------- messages

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

let noticeTimer = 0;
function showNotice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

function setServerState(text) {
  $("server-state").textContent = text;
}

// ---------------------------------------------------------------- the form

const FIELDS = ["prompt", "negative-prompt", "steps", "guidance", "width", "height",
  "scheduler", "num-images", "seed", "prompt-syntax", "vae-tiling", "model",
  "hires", "hires-scale", "hires-upscaler", "hires-strength", "hires-steps"];

function saveForm() {
  const values = {};
  for (const id of FIELDS) values[id] = $(id).value;
  try { localStorage.setItem(STORE_FORM, JSON.stringify(values)); } catch (e) { /* private mode */ }
}

function restoreForm() {
  let values = null;
  try { values = JSON.parse(localStorage.getItem(STORE_FORM) || "null"); } catch (e) { values = null; }
  if (!values || typeof values !== "object") return false;
  if (values.model && hasOption($("model"), values.model)) $("model").value = values.model;
  for (const id of FIELDS) {
    if (id === "model" || typeof values[id] !== "string") continue;
    if ($(id).tagName === "SELECT" && !hasOption($(id), values[id])) continue;
    $(id).value = values[id];
  }
  syncRanges();
  return true;
}

function hasOption(select, value) {
  return Array.from(select.options).some((o) => o.value === value);
}

function modelEntry(name) {
  return state.options.models.find((m) => m.name === name) || null;
}

// The model's native size, steps and sampler with the server's other defaults.
function applyDefaults(modelName, { sizeOnly = false } = {}) {
  const d = state.options.defaults || {};
  const m = modelEntry(modelName) || {};
  $("width").value = m.default_width ?? d.width ?? "";
  $("height").value = m.default_height ?? d.height ?? "";
  const sched = m.default_scheduler ?? d.scheduler;
  if (sched && hasOption($("scheduler"), sched)) $("scheduler").value = sched;
  if (!sizeOnly) {
    $("steps").value = m.default_steps ?? d.steps ?? "";
    $("guidance").value = d.guidance_scale ?? "";
    $("num-images").value = d.num_images ?? 1;
    $("seed").value = -1;
    $("vae-tiling").value = "auto";
    $("prompt-syntax").value = "a1111";
    $("hires").value = "off";
  }
  syncRanges();
}

function syncRanges() {
  $("steps-range").value = $("steps").value;
  $("guidance-range").value = $("guidance").value;
  // The hires details show only while the hires fix is on.
  $("hires-box").dataset.on = $("hires").value;
}

// A whole number from a field; blank -> undefined (the server's default).
function intField(id, label) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`${label} must be a whole number (got "${raw}")`);
  return n;
}

function numberField(id, label) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${label} must be a number (got "${raw}")`);
  return n;
}

// The POST /api/v1/jobs body. Range checks (multiples of 8, limits) are the server's:
// its 400 message is shown as it is.
function jobBody() {
  const body = {
    prompt: $("prompt").value,
    negative_prompt: $("negative-prompt").value,
    num_inference_steps: intField("steps", "Steps"),
    guidance_scale: numberField("guidance", "Guidance"),
    width: intField("width", "Width"),
    height: intField("height", "Height"),
    scheduler: $("scheduler").value || undefined,
    num_images: intField("num-images", "Images"),
    model: $("model").value || undefined,
    prompt_syntax: $("prompt-syntax").value,
  };
  const seed = intField("seed", "Seed");
  if (seed !== undefined && seed !== -1) body.seed = seed;
  const tiling = $("vae-tiling").value;
  if (tiling !== "auto") body.vae_tiling = tiling === "on";
  // The hires fix (A1111's enable_hr): the server checks the values and names a bad one.
  if ($("hires").value === "on") {
    body.hires = {
      scale: numberField("hires-scale", "Hires scale"),
      upscaler: $("hires-upscaler").value,
      strength: numberField("hires-strength", "Hires strength"),
      steps: intField("hires-steps", "Hires steps"),
    };
  }
  // img2img / inpainting / LoRAs (studio_image.js).
  Object.assign(body, studioImage.fields());
  return body;
}

// Short scheduler name from a short name, an A1111 sampler name or a diffusers class name.
function schedulerName(value) {
  if (!value) return null;
  const v = String(value);
  if (hasOption($("scheduler"), v)) return v;
  for (const [short, a1111] of Object.entries(SAMPLER_NAMES)) {
    if (a1111.toLowerCase() === v.toLowerCase()) return short;
  }
  const byLabel = (state.options.schedulers || []).find((s) => s.label === v);
  return byLabel ? byLabel.name : null;
}

// Puts generation parameters (history, png-info or job params) back in the form.
function fillForm(params) {
  if (!params) return [];
  const notes = [];
  const set = (id, v) => { if (v !== undefined && v !== null) $(id).value = v; };
  set("prompt", params.prompt);
  if (params.prompt !== undefined && params.prompt !== null) set("negative-prompt", params.negative_prompt || "");
  set("steps", params.num_inference_steps);
  set("guidance", params.guidance_scale);
  set("width", params.width);
  set("height", params.height);
  set("seed", params.seed);
  if (params.prompt_syntax && hasOption($("prompt-syntax"), params.prompt_syntax)) {
    $("prompt-syntax").value = params.prompt_syntax;
  }
  if (params.scheduler) {
    const s = schedulerName(params.scheduler);
    if (s) $("scheduler").value = s;
    else notes.push(`sampler "${params.scheduler}" is not offered here`);
  }
  if (params.hires && typeof params.hires === "object") {
    const h = params.hires;
    $("hires").value = "on";
    set("hires-scale", h.scale);
    if (h.upscaler && hasOption($("hires-upscaler"), h.upscaler)) $("hires-upscaler").value = h.upscaler;
    else if (h.upscaler) notes.push(`hires upscaler "${h.upscaler}" is not offered here`);
    set("hires-strength", h.strength);
    set("hires-steps", h.steps);
  } else if (params.prompt !== undefined && params.prompt !== null) {
    $("hires").value = "off";
  }
  $("hires-box").dataset.on = $("hires").value;
  if (params.model) {
    if (hasOption($("model"), params.model)) $("model").value = params.model;
    else notes.push(`it was made with model "${params.model}", which this server does not have`);
  }
  syncRanges();
  saveForm();
  return notes;
}

function lastSeed() {
  const v = localStorage.getItem(STORE_SEED);
  return v === null ? null : Number(v);
}

// ---------------------------------------------------------------- jobs

function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

function formatSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return null;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

function showProgress(status, step, steps, elapsed, eta) {
  const el = $("progress");
  el.dataset.state = status;
  const frac = steps > 0 ? Math.min(1, step / steps) : 0;
  $("progress-bar").style.width = `${(frac * 100).toFixed(1)}%`;
  let text;
  if (status === "queued") text = "Queued, waiting for the GPU…";
  else {
    const parts = [`Step ${step} / ${steps}`];
    const e = formatSeconds(elapsed);
    if (e) parts.push(`${e} elapsed`);
    const left = formatSeconds(eta);
    if (left) parts.push(`ETA ${left}`);
    text = parts.join(" · ");
  }
  $("progress-text").textContent = text;
  document.title = status === "running" ? `[${Math.round(frac * 100)}%] wgsd studio` : "wgsd studio";
}

async function generate() {
  if (state.job && !state.job.finished) return;
  clearError();
  $("notice").hidden = true;
  let body;
  try {
    body = jobBody();
  } catch (e) {
    showError(e.message);
    return;
  }
  saveForm();
  setBusy(true);
  showProgress("queued", 0, body.num_inference_steps || 0, 0, null);
  try {
    const reply = await api("/api/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    follow(reply.id);
  } catch (e) {
    setBusy(false);
    $("progress").dataset.state = "failed";
    $("progress-text").textContent = "Not started.";
    showError(describe(e, "Generate"));
  }
}

// Follows a job's events (SSE). If the stream drops before the job ends (a server restart,
// a proxy), the job is fetched once to learn its state, and the stream is opened again.
function follow(id) {
  if (state.job && state.job.source) state.job.source.close();
  const job = { id, source: null, finished: false };
  state.job = job;
  $("progress").dataset.job = id;
  $("progress").dataset.events = "0";
  $("preview").dataset.updates = "0";
  try { localStorage.setItem(STORE_JOB, id); } catch (e) { /* private mode */ }
  setBusy(true);
  showPreview(null);

  const source = new EventSource(`/api/v1/jobs/${encodeURIComponent(id)}/events`);
  job.source = source;
  const parse = (ev) => { try { return JSON.parse(ev.data); } catch (e) { return null; } };
  const current = () => state.job === job && !job.finished;

  // The first message is the current state (under whatever event name the server uses).
  const onState = (ev) => {
    const data = parse(ev);
    if (!current() || !data) return;
    if (FINAL.has(data.status)) finish(job, data);
    else showProgress(data.status || "running", data.step || 0, data.steps || 0, data.elapsed_s, data.eta_s);
  };
  source.onmessage = onState;
  source.addEventListener("state", onState);
  source.addEventListener("job", onState);
  // A stream opens with the current state, which may be a `progress` event of a job still
  // queued (step 0); only finished steps count in data-events.
  source.addEventListener("progress", (ev) => {
    const data = parse(ev);
    if (!current() || !data) return;
    const el = $("progress");
    if (data.step > 0) el.dataset.events = String(Number(el.dataset.events || 0) + 1);
    const status = data.status && !FINAL.has(data.status) ? data.status : "running";
    showProgress(data.step > 0 ? "running" : status, data.step || 0, data.steps || 0, data.elapsed_s, data.eta_s);
    if (data.preview) showPreview(data.preview);
  });
  for (const name of ["done", "cancelled"]) {
    source.addEventListener(name, (ev) => { const d = parse(ev); if (current() && d) finish(job, d); });
  }
  // "error" is both the server's failed-job event (with data) and EventSource's own
  // connection error (without).
  source.addEventListener("error", (ev) => {
    if (!current()) return;
    const data = ev.data ? parse(ev) : null;
    if (data) { finish(job, data); return; }
    source.close();
    recover(job);
  });
}

async function recover(job) {
  try {
    const data = await api(`/api/v1/jobs/${encodeURIComponent(job.id)}`);
    if (state.job !== job || job.finished) return;
    if (FINAL.has(data.status)) finish(job, data);
    else setTimeout(() => { if (state.job === job && !job.finished) follow(job.id); }, 1000);
  } catch (e) {
    if (state.job !== job || job.finished) return;
    if (e instanceof ServerError && e.status === 404) {
      finish(job, { status: "failed", error: "The server no longer knows this job (was it restarted?)" });
    } else {
      setServerState("offline");
      setTimeout(() => { if (state.job === job && !job.finished) recover(job); }, 2000);
    }
  }
}

function finish(job, data) {
  if (job.finished) return;
  job.finished = true;
  if (job.source) job.source.close();
  try { localStorage.removeItem(STORE_JOB); } catch (e) { /* private mode */ }
  setBusy(false);
  const steps = data.steps || 0;
  const step = data.status === "done" ? steps : (data.step || 0);
  showProgress(data.status, step, steps, data.elapsed_s, null);
  document.title = "wgsd studio";
  const seed = data.params && data.params.seed;
  if (seed !== undefined && seed !== null) {
    try { localStorage.setItem(STORE_SEED, String(seed)); } catch (e) { /* private mode */ }
  }
  if (data.status === "done") {
    const elapsed = formatSeconds(data.elapsed_s);
    $("progress-text").textContent =
      `Done: ${(data.images || []).length} image(s)` + (elapsed ? ` in ${elapsed}` : "") +
      (seed !== undefined && seed !== null ? `, seed ${seed}` : "") + ".";
    showResults(data);
    loadHistory(true);
  } else if (data.status === "cancelled") {
    $("progress-text").textContent = `Cancelled at step ${data.step || 0} of ${steps}.`;
    restoreViewer();
  } else {
    $("progress-text").textContent = "Failed.";
    showError(`Generation failed: ${data.error || "the server gave no reason"}`);
    restoreViewer();
  }
}

async function cancel() {
  const job = state.job;
  if (!job || job.finished) return;
  $("cancel").disabled = true;
  $("progress-text").textContent = "Cancelling…";
  try {
    const data = await api(`/api/v1/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    if (data && FINAL.has(data.status)) finish(job, data);
  } catch (e) {
    $("cancel").disabled = false;
    showError(describe(e, "Cancel"));
  }
}

// ---------------------------------------------------------------- viewer and images

function showPreview(dataUrl) {
  const img = $("preview");
  if (!dataUrl) {
    img.hidden = true;
    img.removeAttribute("src");
    return;
  }
  img.src = dataUrl;
  img.dataset.updates = String(Number(img.dataset.updates || 0) + 1);
  img.hidden = false;
  $("viewer-image").hidden = true;
  $("viewer-empty").hidden = true;
}

// After a job without images: back to the image that was shown before it, if any.
function restoreViewer() {
  showPreview(null);
  const shown = Boolean(state.selected);
  $("viewer-image").hidden = !shown;
  $("viewer-empty").hidden = shown;
}

// A1111's parameters text for params that came without it (a job's own reply).
function parametersText(p, model) {
  if (!p) return "";
  const lines = [p.prompt || ""];
  if (p.negative_prompt) lines.push(`Negative prompt: ${p.negative_prompt}`);
  const fields = [
    ["Steps", p.num_inference_steps], ["Sampler", SAMPLER_NAMES[p.scheduler] || p.scheduler],
    ["CFG scale", p.guidance_scale], ["Seed", p.seed],
    ["Size", p.width && p.height ? `${p.width}x${p.height}` : null], ["Model", model || p.model],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  lines.push(fields.map(([k, v]) => `${k}: ${v}`).join(", "));
  return lines.join("\n");
}

function thumb(entry, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "thumb";
  b.dataset.name = entry.name;
  const prompt = (entry.params && entry.params.prompt) || entry.name;
  b.title = prompt;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = entry.url;
  img.alt = prompt;
  b.appendChild(img);
  b.addEventListener("click", () => onClick(entry));
  return b;
}

function markSelected() {
  const name = state.selected && state.selected.name;
  for (const el of document.querySelectorAll(".thumb")) {
    el.classList.toggle("selected", el.dataset.name === name);
  }
}

// Shows an image with its parameters; `fill` puts them back in the form.
function selectImage(entry, { fill = false } = {}) {
  state.selected = entry;
  showPreview(null);
  const img = $("viewer-image");
  img.src = entry.url;
  img.alt = (entry.params && entry.params.prompt) || entry.name;
  img.hidden = false;
  $("viewer-empty").hidden = true;
  $("image-info").hidden = false;
  $("image-name").textContent = entry.name;
  $("image-params").textContent = entry.parameters || parametersText(entry.params);
  const dl = $("download");
  dl.href = `${entry.url}${entry.url.includes("?") ? "&" : "?"}download=1`;
  dl.setAttribute("download", entry.name);
  markSelected();
  if (fill) {
    const notes = fillForm(entry.params);
    showNotice(`Parameters of ${entry.name} are in the form` + (notes && notes.length ? `; ${notes.join("; ")}.` : "."));
  }
}

function showResults(job) {
  const box = $("results");
  box.replaceChildren();
  const entries = (job.images || []).map((im, i) => {
    const params = Object.assign({}, job.params || {}, { model: job.model });
    // Each image of a job carries its own seed in its name (NNNNN-<seed>.png).
    const m = /^\d+-(\d+)\.png$/.exec(im.name);
    if (m) params.seed = Number(m[1]);
    else if (params.seed !== undefined && params.seed !== null) params.seed = Number(params.seed) + i;
    return { name: im.name, url: im.url, parameters: null, params };
  });
  for (const e of entries) box.appendChild(thumb(e, (x) => selectImage(x, { fill: true })));
  if (entries.length) selectImage(entries[0]);
}

// ---------------------------------------------------------------- history

async function loadHistory(reset) {
  const offset = reset ? 0 : state.history.length;
  const limit = reset ? Math.max(HISTORY_PAGE, state.history.length) : HISTORY_PAGE;
  try {
    const page = await api(`/api/v1/history?limit=${limit}&offset=${offset}`);
    const items = Array.isArray(page.items) ? page.items : [];
    state.history = reset ? items : state.history.concat(items);
    state.historyTotal = Number(page.total) || state.history.length;
    renderHistory();
  } catch (e) {
    showError(describe(e, "Loading the history"));
  }
}

function renderHistory() {
  // A job's result shown before the history knew it gets the file's own parameters text.
  const sel = state.selected;
  if (sel && !sel.parameters) {
    const known = state.history.find((item) => item.name === sel.name);
    if (known && known.parameters) {
      sel.parameters = known.parameters;
      $("image-params").textContent = known.parameters;
    }
  }
  const gallery = $("gallery");
  gallery.replaceChildren(...state.history.map((item) => thumb(item, (x) => selectImage(x, { fill: true }))));
  $("history-count").textContent = state.historyTotal
    ? `${state.history.length} of ${state.historyTotal}` : "nothing yet";
  $("history-more").hidden = state.history.length >= state.historyTotal;
  markSelected();
}

// ---------------------------------------------------------------- PNG parameters

async function readPng(file) {
  clearError();
  const isPng = file.type === "image/png" || /\.png$/i.test(file.name);
  if (!isPng) {
    showError(`${file.name} is not a PNG: only PNG files carry generation parameters.`);
    return;
  }
  try {
    const info = await api("/api/v1/png-info", {
      method: "POST",
      headers: { "Content-Type": "image/png" },
      body: file,
    });
    if (!info || !info.parameters) {
      showError(`${file.name} carries no generation parameters.`);
      return;
    }
    const notes = fillForm(info.params);
    showNotice(`Parameters read from ${file.name}` + (notes && notes.length ? `; ${notes.join("; ")}.` : "."));
  } catch (e) {
    showError(describe(e, `Reading ${file.name}`));
  }
}

function setupDrop() {
  const overlay = $("drop-overlay");
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  document.addEventListener("drop", (e) => {
    depth = 0;
    overlay.hidden = true;
    const files = e.dataTransfer ? e.dataTransfer.files : null;
    if (!files || !files.length) return;
    e.preventDefault();
    if (studioImage.isImageDrop(e)) {
      studioImage.setInit(files[0]).catch((err) => showError(describe(err, `Reading ${files[0].name}`)));
    } else {
      readPng(files[0]);
    }
  });
}

// ---------------------------------------------------------------- start-up

function fillPickers(options) {
  const model = $("model");
  model.replaceChildren(...options.models.map((m) => new Option(m.name, m.name)));
  if (options.default_model && hasOption(model, options.default_model)) model.value = options.default_model;
  const sched = $("scheduler");
  sched.replaceChildren(...(options.schedulers || []).map((s) => {
    const o = new Option(SAMPLER_NAMES[s.name] || s.name, s.name);
    o.title = s.label || s.name;
    return o;
  }));
  const limits = options.limits || {};
  if (limits.max_steps) {
    $("steps").max = limits.max_steps;
    $("steps-range").max = Math.min(150, limits.max_steps);
  }
  if (limits.max_size) { $("width").max = limits.max_size; $("height").max = limits.max_size; }
  if (limits.max_images) $("num-images").max = limits.max_images;
  studioImage.setLoraChoices(options.loras);
}

async function loadOptions() {
  try {
    state.options = await api("/api/v1/options");
  } catch (e) {
    setServerState("offline");
    showError(describe(e, "Loading the models and defaults"));
    setTimeout(loadOptions, 3000);
    return;
  }
  clearError();
  fillPickers(state.options);
  applyDefaults($("model").value);
  restoreForm();
  const n = state.options.models.length;
  setServerState(`connected · ${n} model${n === 1 ? "" : "s"}`);
  document.body.dataset.ready = "true";
  loadHistory(true);
  // A job that was running when the page was closed or reloaded is followed again.
  const running = localStorage.getItem(STORE_JOB);
  if (running) {
    api(`/api/v1/jobs/${encodeURIComponent(running)}`)
      .then((job) => { if (!FINAL.has(job.status)) follow(running); else localStorage.removeItem(STORE_JOB); })
      .catch(() => localStorage.removeItem(STORE_JOB));
  }
}

// Enlarged small images get crisp pixels; large ones keep smooth scaling.
function markPixels(img) {
  img.classList.toggle("pixels", img.naturalWidth > 0 && img.naturalWidth < 256);
}

function wire() {
  for (const id of ["preview", "viewer-image"]) $(id).addEventListener("load", () => markPixels($(id)));
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("form").addEventListener("input", saveForm);
  $("form").addEventListener("change", saveForm);
  $("hires").addEventListener("change", syncRanges);
  $("cancel").addEventListener("click", cancel);
  $("error-close").addEventListener("click", clearError);
  $("steps-range").addEventListener("input", () => { $("steps").value = $("steps-range").value; });
  $("guidance-range").addEventListener("input", () => { $("guidance").value = $("guidance-range").value; });
  $("steps").addEventListener("input", syncRanges);
  $("guidance").addEventListener("input", syncRanges);
  $("swap-size").addEventListener("click", () => {
    const w = $("width").value;
    $("width").value = $("height").value;
    $("height").value = w;
    saveForm();
  });
  $("seed-random").addEventListener("click", () => { $("seed").value = -1; saveForm(); });
  $("seed-reuse").addEventListener("click", () => {
    const seed = lastSeed();
    if (seed === null) showNotice("No seed yet: generate an image first.");
    else { $("seed").value = seed; saveForm(); }
  });
  $("model").addEventListener("change", () => {
    applyDefaults($("model").value, { sizeOnly: true });
    saveForm();
    showNotice(`Size and sampler set to ${$("model").value}'s defaults.`);
  });
  $("reset-form").addEventListener("click", () => { applyDefaults($("model").value); saveForm(); });
  $("use-params").addEventListener("click", () => {
    if (state.selected) {
      fillForm(state.selected.params);
      showNotice(`Parameters of ${state.selected.name} are in the form.`);
    }
  });
  $("load-png").addEventListener("click", () => $("png-file").click());
  $("png-file").addEventListener("change", () => {
    const f = $("png-file").files[0];
    if (f) readPng(f);
    $("png-file").value = "";
  });
  $("history-refresh").addEventListener("click", () => loadHistory(true));
  $("history-more").addEventListener("click", () => loadHistory(false));
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      generate();
    } else if (e.key === "Escape" && state.job && !state.job.finished) {
      cancel();
    } else if (e.key === "Enter" && e.target.tagName === "INPUT") {
      e.preventDefault(); // Enter in a number field confirms it; only Ctrl+Enter generates
    }
  });
  setupDrop();
  studioImage.wire();
}

wire();
loadOptions();
