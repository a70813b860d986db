// wgsd studio: the image panel. An init image (chosen or dropped) turns a job into
// img2img with a strength; a mask painted on it (brush, eraser, clear, invert) or loaded
// from a file turns it into inpainting (white repaints, as diffusers); LoRAs from the
// server's loras folder are applied with a weight. studio.js asks `studioImage.fields()`
// for the job body's `init_image`, `strength`, `mask` and `loras`.
"use strict";

const studioImage = (() => {
  const $ = (id) => document.getElementById(id);
  const img = { dataUrl: null, name: null, width: 0, height: 0 };
  const loras = [];           // [{ name, scale }]
  let painting = false;
  let last = null;

  const canvas = () => $("mask-canvas");
  const ctx = () => canvas().getContext("2d");

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      r.readAsDataURL(file);
    });
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const i = new Image();
      i.onload = () => resolve(i);
      i.onerror = () => reject(new Error("not an image the browser can read"));
      i.src = url;
    });
  }

  // Any painted pixel (alpha > 0) in the mask layer.
  function maskPainted() {
    const c = canvas();
    if (!img.dataUrl || !c.width) return false;
    const d = ctx().getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
    return false;
  }

  function updateState() {
    const has = Boolean(img.dataUrl);
    $("init-stage").hidden = !has;
    $("init-empty").hidden = has;
    for (const id of ["init-clear", "mask-clear", "mask-invert", "mask-load"]) $(id).disabled = !has;
    const painted = has && maskPainted();
    $("image-panel").dataset.mode = !has ? "txt2img" : painted ? "inpaint" : "img2img";
    $("init-info").textContent = has
      ? `${img.name}: ${img.width} x ${img.height} · ${painted ? "inpainting (white repaints)" : "img2img (paint a mask to inpaint)"}`
      : "";
  }

  async function setInit(file) {
    const url = await readAsDataUrl(file);
    const i = await loadImage(url);
    Object.assign(img, { dataUrl: url, name: file.name || "image", width: i.naturalWidth, height: i.naturalHeight });
    $("init-preview").src = url;
    const c = canvas();
    c.width = i.naturalWidth;
    c.height = i.naturalHeight;
    ctx().clearRect(0, 0, c.width, c.height);
    // The job's size follows the image (multiples of 8; the server resizes to them).
    const w = Math.max(8, Math.floor(i.naturalWidth / 8) * 8);
    const h = Math.max(8, Math.floor(i.naturalHeight / 8) * 8);
    for (const [id, v] of [["width", w], ["height", h]]) {
      $(id).value = v;
      $(id).dispatchEvent(new Event("change", { bubbles: true }));
    }
    updateState();
  }

  function clearInit() {
    Object.assign(img, { dataUrl: null, name: null, width: 0, height: 0 });
    $("init-preview").removeAttribute("src");
    const c = canvas();
    ctx().clearRect(0, 0, c.width, c.height);
    updateState();
  }

  function brushSize() {
    return Math.max(1, Number($("mask-size").value) || 8) * (img.width / Math.max(1, canvas().clientWidth || img.width));
  }

  // Canvas pixels from a pointer event (the canvas is scaled to fit the panel).
  function at(e) {
    const r = canvas().getBoundingClientRect();
    return {
      x: ((e.clientX - r.left) / Math.max(1, r.width)) * canvas().width,
      y: ((e.clientY - r.top) / Math.max(1, r.height)) * canvas().height,
    };
  }

  function stroke(from, to) {
    const g = ctx();
    g.globalCompositeOperation = $("mask-eraser").checked ? "destination-out" : "source-over";
    g.strokeStyle = "#fff";
    g.fillStyle = "#fff";
    g.lineCap = "round";
    g.lineWidth = brushSize();
    g.beginPath();
    g.moveTo(from.x, from.y);
    g.lineTo(to.x + 0.01, to.y);
    g.stroke();
    g.globalCompositeOperation = "source-over";
  }

  function invertMask() {
    const c = canvas();
    const data = ctx().getImageData(0, 0, c.width, c.height);
    const d = data.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = d[i + 1] = d[i + 2] = 255;
      d[i + 3] = 255 - d[i + 3];
    }
    ctx().putImageData(data, 0, 0);
    updateState();
  }

  // A mask file: its brightness becomes the painted layer (white = repaint).
  async function loadMask(file) {
    const i = await loadImage(await readAsDataUrl(file));
    if (i.naturalWidth !== img.width || i.naturalHeight !== img.height) {
      throw new Error(`the mask is ${i.naturalWidth} x ${i.naturalHeight} but the image is ${img.width} x ${img.height}`);
    }
    const c = canvas();
    const g = ctx();
    g.clearRect(0, 0, c.width, c.height);
    g.drawImage(i, 0, 0);
    const data = g.getImageData(0, 0, c.width, c.height);
    const d = data.data;
    for (let k = 0; k < d.length; k += 4) {
      const luma = 0.299 * d[k] + 0.587 * d[k + 1] + 0.114 * d[k + 2];
      d[k] = d[k + 1] = d[k + 2] = 255;
      d[k + 3] = Math.round(luma);
    }
    g.putImageData(data, 0, 0);
    updateState();
  }

  // The mask as a PNG data URL: the painted layer white on black, the image's size.
  function maskPng() {
    const c = canvas();
    const out = document.createElement("canvas");
    out.width = c.width;
    out.height = c.height;
    const g = out.getContext("2d");
    g.fillStyle = "#000";
    g.fillRect(0, 0, out.width, out.height);
    g.drawImage(c, 0, 0);
    return out.toDataURL("image/png");
  }

  function renderLoras() {
    const list = $("lora-list");
    list.replaceChildren(...loras.map((l, k) => {
      const li = document.createElement("li");
      li.dataset.name = l.name;
      const name = document.createElement("span");
      name.textContent = l.name;
      const w = document.createElement("input");
      w.type = "number";
      w.step = "0.05";
      w.value = String(l.scale);
      w.title = `Weight of ${l.name}`;
      w.addEventListener("input", () => { const v = Number(w.value); if (Number.isFinite(v)) l.scale = v; });
      const rm = document.createElement("button");
      rm.type = "button";
      rm.className = "icon";
      rm.textContent = "✕";
      rm.title = `Remove ${l.name}`;
      rm.addEventListener("click", () => { loras.splice(k, 1); renderLoras(); });
      li.append(name, w, rm);
      return li;
    }));
  }

  // Called by studio.js with GET /api/v1/options' `loras` (names in the loras folder).
  function setLoraChoices(names) {
    const pick = $("lora-pick");
    pick.replaceChildren(...(names || []).map((n) => new Option(n, n)));
    $("lora-panel").hidden = !(names && names.length);
  }

  // The job body's image fields (none without an init image or LoRAs).
  function fields() {
    const body = {};
    if (img.dataUrl) {
      body.init_image = img.dataUrl;
      const s = Number($("strength").value);
      if (!Number.isFinite(s)) throw new Error(`Strength must be a number (got "${$("strength").value}")`);
      body.strength = s;
      if (maskPainted()) body.mask = maskPng();
    }
    if (loras.length) body.loras = loras.map((l) => ({ name: l.name, scale: l.scale }));
    return body;
  }

  // Drops on the image panel set the init image (studio.js reads PNG parameters from
  // drops elsewhere).
  function isImageDrop(e) {
    return Boolean(e.target && e.target.closest && e.target.closest("#image-panel"));
  }

  function report(e, doing) {
    const el = $("error");
    $("error-text").textContent = `${doing}: ${e.message || e}`;
    el.hidden = false;
  }

  function wire() {
    $("init-choose").addEventListener("click", () => $("init-file").click());
    $("init-file").addEventListener("change", () => {
      const f = $("init-file").files[0];
      if (f) setInit(f).catch((e) => report(e, `Reading ${f.name}`));
      $("init-file").value = "";
    });
    $("init-clear").addEventListener("click", clearInit);
    $("mask-clear").addEventListener("click", () => {
      const c = canvas();
      ctx().clearRect(0, 0, c.width, c.height);
      updateState();
    });
    $("mask-invert").addEventListener("click", invertMask);
    $("mask-load").addEventListener("click", () => $("mask-file").click());
    $("mask-file").addEventListener("change", () => {
      const f = $("mask-file").files[0];
      if (f) loadMask(f).catch((e) => report(e, `Reading the mask ${f.name}`));
      $("mask-file").value = "";
    });
    $("strength-range").addEventListener("input", () => { $("strength").value = $("strength-range").value; });
    $("strength").addEventListener("input", () => { $("strength-range").value = $("strength").value; });
    const c = canvas();
    c.addEventListener("pointerdown", (e) => {
      if (!img.dataUrl) return;
      e.preventDefault();
      painting = true;
      last = at(e);
      stroke(last, last);
      if (c.setPointerCapture) c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!painting) return;
      const p = at(e);
      stroke(last, p);
      last = p;
    });
    const end = () => { if (painting) { painting = false; updateState(); } };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", end);
    $("lora-add").addEventListener("click", () => {
      const name = $("lora-pick").value;
      if (!name || loras.some((l) => l.name === name)) return;
      const w = Number($("lora-weight").value);
      loras.push({ name, scale: Number.isFinite(w) ? w : 1 });
      renderLoras();
    });
    updateState();
  }

  return { wire, fields, setInit, setLoraChoices, isImageDrop, report };
})();
