// The page: choose a served model and a video, send it through the page's own server (which adds the token),
// and show the answer over the playing video. Plain browser JavaScript, no build step, nothing fetched from
// elsewhere. The answer's fields are those of docs/api.md (classifiers) and docs/detection.md (detectors).
"use strict";

const $ = (id) => document.getElementById(id);
const API_HEADERS = { "X-Requested-With": "slowfast-web" };
const state = { models: new Map(), file: null, url: null, xhr: null, answer: null, intervals: [], keyframes: [] };

// ---- models ------------------------------------------------------------------------------------------------

async function loadModels() {
  const status = $("models-status");
  let body;
  try {
    const response = await fetch("/api/models", { headers: API_HEADERS });
    body = await response.json();
    if (!response.ok) throw body;
  } catch (problem) {
    status.textContent = `The models could not be listed: ${errorText(problem)}`;
    status.classList.add("error");
    return;
  }
  const rows = $("models").tBodies[0];
  rows.replaceChildren();
  for (const model of body.models) {
    state.models.set(model.name, model);
    const d = model.description || {};
    const kind = d.kind === "detector" ? `detector${d.detector ? ` (people: ${d.detector.name})` : " (boxes given)"}` : d.kind;
    const cells = [
      model.name,
      kind || "?",
      d.clip ? `${d.clip.frames} frames, ${d.clip.seconds} s` : "?",
      d.classes ?? "?",
      model.workers ? `${model.workers.ready} ready of ${model.workers.all}` : "?",
      d.weights ?? model.description_error ?? "?",
      d.engine ? `${d.engine.name} ${d.engine.precision} on ${d.engine.device}` : "?",
    ];
    const row = rows.insertRow();
    row.dataset.model = model.name;
    for (const text of cells) row.insertCell().textContent = String(text);
    $("model").add(new Option(`${model.name} (${kind || "?"})`, model.name));
  }
  status.textContent = body.models.length ? "" : "TorchServe serves no model.";
  applyModel();
}

function currentModel() {
  return state.models.get($("model").value);
}

function isDetector() {
  const model = currentModel();
  return Boolean(model && model.description && model.description.kind === "detector");
}

function applyModel() {
  const detector = isDetector();
  document.body.dataset.kind = detector ? "detector" : "classifier";
  for (const element of document.querySelectorAll(".detector-only")) element.hidden = !detector;
  for (const element of document.querySelectorAll(".classifier-only")) element.hidden = detector;
  $("mode").options[0].textContent = detector ? "keyframe" : "clip";
  $("position-name").textContent = detector ? "keyframe (s)" : "start (s)";
  const model = currentModel();
  const classes = model && model.description ? model.description.classes : null;
  if (classes) $("top_k").max = classes;
  applyMode();
  updateSend();
}

function applyMode() {
  const timeline = $("mode").value === "timeline";
  const detector = isDetector();
  for (const element of document.querySelectorAll(".timeline-only")) element.hidden = !timeline;
  for (const element of document.querySelectorAll(".clip-only")) element.hidden = timeline || detector;
}

// ---- the video ---------------------------------------------------------------------------------------------

function setFile(file) {
  if (!file) return;
  if (state.url) URL.revokeObjectURL(state.url);
  state.file = file;
  state.url = URL.createObjectURL(file);
  const player = $("player");
  player.src = state.url;
  $("stage").hidden = false;
  $("timebar").hidden = false;
  $("file-name").textContent = `${file.name} (${formatBytes(file.size)})`;
  $("position").value = "0";
  clearResults();
  updateSend();
}

function formatBytes(bytes) {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function duration() {
  const stored = state.answer && state.answer.video ? state.answer.video.duration_sec : null;
  const played = $("player").duration;
  return Number.isFinite(played) && played > 0 ? played : stored || 0;
}

function onTime() {
  const player = $("player");
  const t = player.currentTime;
  if (document.activeElement !== $("position")) $("position").value = t.toFixed(2);
  const total = duration();
  $("cursor").style.left = total ? `${Math.min(100, (100 * t) / total)}%` : "0";
  const interval = state.intervals.find((i) => t >= i.start_sec && t < i.end_sec);
  $("now-label").textContent = interval ? `${interval.label} ${interval.mean_score.toFixed(2)}` : "";
  for (const button of $("strip").children) button.classList.toggle("current", interval && button.dataset.start == interval.start_sec);
  drawBoxes();
}

// ---- sending -----------------------------------------------------------------------------------------------

function updateSend() {
  $("send").disabled = !(state.file && currentModel()) || state.xhr !== null;
}

function requestForm() {
  const form = new FormData();
  form.append("data", state.file, state.file.name);
  form.append("top_k", $("top_k").value);
  const position = Number($("position").value) || 0;
  const timeline = $("mode").value === "timeline";
  if (timeline) {
    form.append("mode", "timeline");
    if ($("stride_sec").value) form.append("stride_sec", $("stride_sec").value);
  }
  if (isDetector()) {
    if (!timeline || position > 0) form.append("keyframe_sec", position.toFixed(3));
    form.append("threshold", $("threshold").value || "0");
  } else {
    form.append("start_sec", position.toFixed(3));
    if (!timeline) form.append("views", $("views").value);
  }
  return form;
}

function send(event) {
  event.preventDefault();
  if (!state.file || !currentModel()) return;
  clearResults();
  const xhr = new XMLHttpRequest();
  state.xhr = xhr;
  const started = performance.now();
  xhr.open("POST", `/api/predictions/${encodeURIComponent($("model").value)}`);
  for (const [name, value] of Object.entries(API_HEADERS)) xhr.setRequestHeader(name, value);
  const progress = $("progress");
  progress.hidden = false;
  progress.value = 0;
  setBusy(true, "uploading…");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      progress.value = e.loaded / e.total;
      setBusy(true, `uploading ${Math.round((100 * e.loaded) / e.total)}%`);
    }
  };
  xhr.upload.onload = () => setBusy(true, "the model is working…");
  xhr.onload = () => {
    const seconds = (performance.now() - started) / 1000;
    let body;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      body = { type: "Error", message: xhr.responseText || xhr.statusText };
    }
    finish();
    if (xhr.status >= 200 && xhr.status < 300) {
      render(body, seconds);
    } else {
      showError(xhr.status, body);
    }
  };
  xhr.onerror = () => {
    finish();
    showError(0, { type: "NetworkError", message: "the page's server did not answer: is it still running (make serve)?" });
  };
  xhr.onabort = () => {
    finish();
    document.body.dataset.state = "cancelled";
    setStatus("cancelled");
  };
  xhr.send(requestForm());
}

function setBusy(busy, text) {
  document.body.dataset.state = busy ? "busy" : document.body.dataset.state;
  $("cancel").disabled = !busy;
  setStatus(text);
  updateSend();
}

function setStatus(text) {
  $("status").textContent = text;
}

function finish() {
  state.xhr = null;
  $("progress").hidden = true;
  setBusy(false, "");
}

function cancel() {
  if (state.xhr) state.xhr.abort();
}

// ---- results -----------------------------------------------------------------------------------------------

function clearResults() {
  state.answer = null;
  state.intervals = [];
  state.keyframes = [];
  $("error").hidden = true;
  $("bars").replaceChildren();
  $("summary").textContent = "";
  $("timing").replaceChildren();
  $("json").textContent = "";
  $("detections").hidden = true;
  $("detections").tBodies[0].replaceChildren();
  $("strip").replaceChildren();
  $("strip").hidden = true;
  for (const window of $("timebar").querySelectorAll(".window")) window.remove();
  $("now-label").textContent = "";
  delete document.body.dataset.state;
  drawBoxes();
}

function errorText(problem) {
  if (problem && problem.message) return `${problem.type || "Error"}: ${problem.message}`;
  return String(problem);
}

function showError(status, body) {
  $("error").hidden = false;
  $("error-title").textContent = `${status || "no answer"} ${body.type || "Error"}`;
  $("error-message").textContent = body.message || JSON.stringify(body);
  $("json").textContent = JSON.stringify(body, null, 2);
  document.body.dataset.state = "error";
}

function render(answer, seconds) {
  state.answer = answer;
  const engine = answer.engine ? `${answer.engine.name} ${answer.engine.precision} on ${answer.engine.device}` : "";
  const random = answer.weights === "random-init" ? " (the scores mean nothing)" : "";
  const windows = answer.timeline && answer.timeline.segments ? ` · classes averaged over ${answer.timeline.segments.length} windows` : "";
  $("summary").textContent = `${answer.model} · weights ${answer.weights}${random} · ${engine} · batch of ${answer.batch_size}${windows}`;
  if (answer.predictions) renderClassification(answer);
  else renderDetections(answer);
  renderTiming(answer.timing_ms, seconds);
  $("json").textContent = JSON.stringify(answer, null, 2);
  document.body.dataset.state = "done";
  onTime();
}

function renderClassification(answer) {
  const bars = $("bars");
  for (const p of answer.predictions) {
    const item = document.createElement("li");
    item.dataset.label = p.label;
    item.dataset.score = String(p.score);
    const name = document.createElement("div");
    name.className = "name";
    name.append(span(p.label), span(p.score.toFixed(3)));
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`;
    bar.setAttribute("role", "presentation");
    item.append(name, bar);
    bars.append(item);
  }
  const windows = answer.timeline ? answer.timeline.segments.map((s) => [s.start_sec, s.end_sec]) : answer.views.windows;
  markWindows(answer.timeline ? [] : windows);
  if (answer.timeline) renderStrip(answer.timeline.intervals);
}

function span(text) {
  const element = document.createElement("span");
  element.textContent = text;
  return element;
}

function markWindows(windows) {
  const total = duration();
  if (!total) return;
  for (const [start, end] of windows) {
    const element = document.createElement("div");
    element.className = "window";
    // An MMAction2 window near the end wraps to the start (end < start): shown up to the end of the video.
    const stop = end >= start ? end : total;
    element.style.left = `${(100 * start) / total}%`;
    element.style.width = `${(100 * Math.max(stop - start, 0)) / total}%`;
    element.title = `clip ${start.toFixed(2)}–${end.toFixed(2)} s`;
    $("timebar").insertBefore(element, $("cursor"));
  }
}

function colour(label) {
  let hash = 0;
  for (const c of label) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, 38%)`;
}

function renderStrip(intervals) {
  state.intervals = intervals;
  const strip = $("strip");
  const total = duration() || intervals[intervals.length - 1].end_sec;
  strip.hidden = false;
  for (const interval of intervals) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.label = interval.label;
    button.dataset.start = String(interval.start_sec);
    button.dataset.end = String(interval.end_sec);
    button.textContent = interval.label;
    const text = `${interval.label}, ${interval.start_sec.toFixed(2)} to ${interval.end_sec.toFixed(2)} s, mean score ${interval.mean_score.toFixed(3)}`;
    button.title = text;
    button.setAttribute("aria-label", `${text}: play from here`);
    button.style.left = `${(100 * interval.start_sec) / total}%`;
    button.style.width = `${(100 * (interval.end_sec - interval.start_sec)) / total}%`;
    button.style.background = colour(interval.label);
    button.addEventListener("click", () => {
      $("player").currentTime = interval.start_sec;
    });
    strip.append(button);
  }
}

function renderDetections(answer) {
  state.keyframes = answer.timeline
    ? answer.timeline.keyframes
    : [{ keyframe_sec: answer.keyframe_sec, clip: answer.clip, detections: answer.detections }];
  markWindows(state.keyframes.map((k) => [k.clip.start_sec, k.clip.end_sec]));
  const rows = $("detections").tBodies[0];
  for (const keyframe of state.keyframes) {
    keyframe.detections.forEach((d, index) => {
      const row = rows.insertRow();
      row.dataset.keyframe = String(keyframe.keyframe_sec);
      const actions = d.actions.map((a) => `${a.label} ${a.score.toFixed(2)}`).join(", ") || "(none above the threshold)";
      const person = d.person_score === null ? `#${index + 1} (given)` : `#${index + 1} (${d.person_score.toFixed(2)})`;
      for (const text of [keyframe.keyframe_sec.toFixed(2), person, d.box.map((v) => Math.round(v)).join(", "), actions]) {
        row.insertCell().textContent = text;
      }
    });
    if (!keyframe.detections.length) {
      const row = rows.insertRow();
      row.insertCell().textContent = keyframe.keyframe_sec.toFixed(2);
      const cell = row.insertCell();
      cell.colSpan = 3;
      cell.textContent = "no one found";
    }
  }
  $("detections").hidden = false;
  const first = state.keyframes[0];
  if (first) $("player").currentTime = first.keyframe_sec;  // show the boxes where they were found
}

function renderTiming(timing, seconds) {
  const list = $("timing");
  for (const [stage, ms] of Object.entries(timing || {})) {
    list.append(term(stage), definition(`${ms.toFixed(1)} ms`));
  }
  list.append(term("round trip"), definition(`${seconds.toFixed(2)} s (upload included)`));
}

function term(text) {
  const element = document.createElement("dt");
  element.textContent = text;
  return element;
}

function definition(text) {
  const element = document.createElement("dd");
  element.textContent = text;
  return element;
}

// ---- boxes over the video ----------------------------------------------------------------------------------

function drawBoxes() {
  const canvas = $("overlay");
  const player = $("player");
  const ratio = window.devicePixelRatio || 1;
  const width = player.clientWidth;
  const height = player.clientHeight;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const answer = state.answer;
  if (!state.keyframes.length || !answer || !player.videoWidth) return;
  // The keyframe shown is the last one at or before the playing time, held until the next.
  const t = player.currentTime + 1e-3;
  const shown = state.keyframes.filter((k) => k.keyframe_sec <= t).pop();
  if (!shown) return;
  // Boxes are in pixels of the upright frame; the player shows that frame scaled to fit (letterboxed).
  const turned = answer.video.rotation === 90 || answer.video.rotation === 270;
  const upright = turned ? [answer.video.height, answer.video.width] : [answer.video.width, answer.video.height];
  const scale = Math.min(width / player.videoWidth, height / player.videoHeight);
  const [left, top] = [(width - player.videoWidth * scale) / 2, (height - player.videoHeight * scale) / 2];
  const [sx, sy] = [(player.videoWidth * scale) / upright[0], (player.videoHeight * scale) / upright[1]];
  context.lineWidth = 2;
  context.font = "600 13px system-ui, sans-serif";
  shown.detections.forEach((d, index) => {
    const [x1, y1, x2, y2] = d.box;
    const [x, y, w, h] = [left + x1 * sx, top + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy];
    context.strokeStyle = "#ffd400";
    context.strokeRect(x, y, w, h);
    const top1 = d.actions[0];
    const text = `#${index + 1} ${top1 ? `${top1.label} ${top1.score.toFixed(2)}` : "person"}`;
    const textWidth = context.measureText(text).width + 8;
    context.fillStyle = "rgba(0, 0, 0, 0.7)";
    context.fillRect(x, Math.max(0, y - 18), textWidth, 18);
    context.fillStyle = "#ffd400";
    context.fillText(text, x + 4, Math.max(13, y - 5));
  });
}

// ---- wiring ------------------------------------------------------------------------------------------------

function wire() {
  $("model").addEventListener("change", () => {
    clearResults();
    applyModel();
  });
  $("mode").addEventListener("change", applyMode);
  $("file").addEventListener("change", () => setFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    setFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("file").click();
    }
  });
  const player = $("player");
  for (const name of ["timeupdate", "seeked", "loadedmetadata", "pause"]) player.addEventListener(name, onTime);
  player.addEventListener("error", () => {
    // The service decodes more than browsers play (MPEG-4 Part 2, HEVC, ...): it can still be sent.
    if (state.file) $("file-name").textContent += " — this browser cannot play it; the model can still be asked";
  });
  window.addEventListener("resize", drawBoxes);
  $("position").addEventListener("change", () => {
    if ($("position").value === "") return;
    const value = Number($("position").value);
    if (Number.isFinite(value) && value >= 0 && player.src) player.currentTime = value;
  });
  $("request").addEventListener("submit", send);
  $("cancel").addEventListener("click", cancel);
  loadModels();
}

document.addEventListener("DOMContentLoaded", wire);
