"use strict";
// attnzoo try-it page. Talks only to the server that served it (relative URLs):
//   GET models (again every few seconds while a variant loads), POST detect | compare
//   (score_thr=0.05, once per image and variant choice), POST attention?format=image (on click).
// The score slider filters the answers here, without a new request.

const COMPARE_ALL = "__compare__";
const REQUEST_SCORE_THR = 0.05; // the lowest threshold the slider offers
const MODELS_POLL_MS = 2000; // while a variant is loading
const STAND_IN_MARK = "synthetic weights"; // as the server titles such panels (routes/compare.py)

const $ = (id) => document.getElementById(id);

const state = {
  file: null, // the uploaded File (sent again for each request)
  image: null, // its decoded ImageBitmap
  models: new Map(), // variant → GET /models entry
  panels: [], // {result, canvas, shown}
  threshold: 0.3,
  generation: 0, // answers of superseded requests are dropped
  attentionUrl: null,
};

// The colour rule of model_zoo.visualize.class_color (golden-ratio hue steps, HSV s=0.85 v=0.95),
// so that boxes here have the colours of the server's drawn images.
function classColor(label) {
  const hue = (label * 0.618033988749895) % 1;
  const [s, v] = [0.85, 0.95];
  const i = Math.floor(hue * 6);
  const f = hue * 6 - i;
  const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return `rgb(${rgb.map((c) => Math.trunc(c * 255)).join(",")})`;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function fixed(value, digits = 1) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${body.detail}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function postImage(url) {
  const type = state.file.type || "application/octet-stream";
  return fetch(url, { method: "POST", body: state.file, headers: { "Content-Type": type } });
}

// ---- models -----------------------------------------------------------------------------------

async function loadModels() {
  const response = await fetch("models");
  if (!response.ok) {
    setStatus(`models: ${await errorText(response)}`, true);
    return;
  }
  const { models, hint } = await response.json();
  state.models = new Map(models.map((model) => [model.variant, model]));
  fillVariantChoice(models);
  fillStageChoice(models);
  fillModelsTable(models);
  showSetupHelp(models, hint);
  showDemoBanner(models);
  if (models.some((m) => m.state === "loading")) setTimeout(() => report(loadModels()), MODELS_POLL_MS);
}

function fillVariantChoice(models) {
  const select = $("variant");
  const previous = select.value;
  const loaded = models.filter((m) => m.state === "loaded");
  select.replaceChildren();
  for (const model of models) {
    const label = model.state !== "loaded" ? `${model.variant} (${model.state})` : model.weights_source === "synthetic" ? `${model.variant} (${STAND_IN_MARK})` : model.variant;
    select.add(new Option(label, model.variant, false, model === loaded[0]));
    select.options[select.options.length - 1].disabled = model.state !== "loaded";
  }
  select.add(new Option(`compare all (${loaded.length} loaded)`, COMPARE_ALL));
  const kept = [...select.options].find((option) => option.value === previous && !option.disabled);
  if (kept) select.value = previous;
  const loading = models.filter((m) => m.state === "loading").map((m) => m.variant);
  if (!loaded.length && loading.length) setStatus(`Loading ${loading.join(", ")}… this page updates when one is ready.`);
  else if (!loaded.length) setStatus("No variant is loaded: see below what to do.", true);
  else if (!state.file) setStatus("");
}

function fillStageChoice(models) {
  const select = $("att-stage");
  const previous = select.value;
  const stages = [...new Set(models.flatMap((m) => m.architecture.attention_stages))].sort((a, b) => a - b);
  select.replaceChildren(...stages.map((stage) => new Option(`${stage}`, `${stage}`)));
  if (stages.includes(Number(previous))) select.value = previous;
}

// Missing checkpoints: where to put which file, and that `attnzoo serve --demo` exists (the
// server's hint). Shown when a requested variant's checkpoint is missing, or when none loaded.
// The banner of a service in demo mode: which loaded variants serve synthetic stand-in weights.
function showDemoBanner(models) {
  const synthetic = models.filter((m) => m.weights_source === "synthetic").map((m) => m.variant);
  $("demo-banner").hidden = !synthetic.length;
  $("demo-variants").textContent = synthetic.join(", ");
}

function showSetupHelp(models, hint) {
  const loaded = models.some((m) => m.state === "loaded");
  const loading = models.some((m) => m.state === "loading");
  const missing = models.filter((m) => m.missing_weights);
  $("setup-help").hidden = loading || (loaded && !missing.length);
  if ($("setup-help").hidden) return;
  $("setup-title").textContent = loaded ? "Some checkpoints are missing" : "No variant is loaded";
  $("setup-hint").textContent = hint ? `${hint.charAt(0).toUpperCase()}${hint.slice(1)}.` : "The requested variants failed to load:";
  const item = (...parts) => {
    const li = document.createElement("li");
    li.append(...parts);
    return li;
  };
  const code = (text) => Object.assign(document.createElement("code"), { textContent: text });
  const files = missing.map(({ variant, missing_weights: { file } }) => item(`${variant}: `, code(file)));
  const failed = models
    .filter((m) => m.requested && m.state === "unavailable" && !m.missing_weights)
    .map((m) => item(`${m.variant}: ${m.reason}`));
  $("setup-files").replaceChildren(...files, ...failed);
}

// How a variant serving synthetic stand-in weights is marked wherever its figures are shown.
function standInMark() {
  return Object.assign(document.createElement("span"), {
    className: "stand-in",
    textContent: STAND_IN_MARK,
    title: "synthetic stand-in weights: these detections mean nothing (attnzoo serve --demo)",
  });
}

function fillModelsTable(models) {
  const body = $("models-table").tBodies[0];
  body.replaceChildren();
  for (const model of models) {
    const row = body.insertRow();
    const measured = model.measured || {};
    const cells = [
      [model.weights_source === "synthetic" ? `${model.variant} (${STAND_IN_MARK})` : model.variant],
      [model.architecture.attention_type || "—"],
      [model.architecture.dcn ? `stages ${model.architecture.dcn_stages.join(", ")}` : "no"],
      [model.state, `state-${model.state}`],
      [fixed(model.published.box_ap), "num"],
      [fixed(measured.box_ap), "num"],
      [fixed(model.published.fps), "num"],
      [fixed(measured.fps), "num"],
      [model.device || "—"],
    ];
    for (const [text, className] of cells) {
      const cell = row.insertCell();
      cell.textContent = text;
      if (className) cell.className = className;
    }
    row.dataset.variant = model.variant;
    if (model.reason) row.cells[3].title = model.reason;
  }
}

// ---- detections -------------------------------------------------------------------------------

async function useFile(file) {
  if (!file) return;
  try {
    state.image = await createImageBitmap(file);
  } catch {
    setStatus(`This browser cannot display ${file.name || "the file"}; choose a JPEG, PNG or WebP image.`, true);
    return;
  }
  state.file = file;
  await run();
}

async function run() {
  if (!state.file) return;
  const choice = $("variant").value;
  const generation = ++state.generation;
  const url =
    choice === COMPARE_ALL
      ? `compare?score_thr=${REQUEST_SCORE_THR}`
      : `detect?variant=${encodeURIComponent(choice)}&score_thr=${REQUEST_SCORE_THR}`;
  setStatus(choice === COMPARE_ALL ? "Running every loaded variant…" : `Running ${choice}…`);
  const response = await postImage(url);
  if (generation !== state.generation) return;
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return;
  }
  const body = await response.json();
  // a comparison gives the image size once, for every variant
  const results = choice === COMPARE_ALL ? body.results.map((r) => ({ ...r, width: body.width, height: body.height })) : [body];
  showResults(results);
  setStatus("Hover a box for its class and score; click a point for an attention map.");
}

function latencyOf(result) {
  return result.latency_ms ?? Object.values(result.timings_ms).reduce((a, b) => a + b, 0);
}

function showResults(results) {
  const container = $("results");
  $("tooltip").hidden = true; // its canvas is about to go: no mouseleave will come
  container.replaceChildren();
  state.panels = results.map((result) => {
    const figure = document.createElement("figure");
    figure.className = "panel";
    figure.dataset.variant = result.variant;
    const caption = document.createElement("figcaption");
    const model = state.models.get(result.variant);
    const figures = document.createElement("small");
    figures.textContent = ` published AP ${fixed(model?.published.box_ap)} · ${latencyOf(result).toFixed(0)} ms here`;
    caption.append(result.variant);
    if (result.weights_source === "synthetic") caption.append(standInMark());
    caption.append(figures);
    const canvas = document.createElement("canvas");
    canvas.width = result.width;
    canvas.height = result.height;
    canvas.dataset.variant = result.variant;
    const list = document.createElement("details");
    list.className = "detections";
    list.open = true;
    list.append(document.createElement("summary"), document.createElement("ol"));
    figure.append(caption, canvas, list);
    container.append(figure);
    const panel = { result, canvas, list, shown: [] };
    canvas.addEventListener("mousemove", (event) => hover(panel, event));
    canvas.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
    canvas.addEventListener("click", (event) => report(showAttention(panel, event)));
    return panel;
  });
  state.panels.forEach(draw);
}

function draw(panel) {
  const { canvas, result } = panel;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  panel.shown = result.detections.filter((d) => d.score > state.threshold);
  const width = Math.max(1, Math.round(0.002 * (canvas.width + canvas.height))); // as the server draws
  const offset = (width % 2) / 2; // odd widths centred on pixel centres: crisp, unblended edges
  ctx.lineWidth = width;
  for (const detection of [...panel.shown].reverse()) { // best last, on top
    const [x1, y1, x2, y2] = detection.bbox.map(Math.round);
    ctx.strokeStyle = classColor(detection.label);
    ctx.strokeRect(x1 + offset, y1 + offset, x2 - x1, y2 - y1);
  }
  canvas.dataset.boxes = `${panel.shown.length}`;
  listDetections(panel);
}

// The detections drawn on the panel, by descending score: a count, and class + score of each.
function listDetections({ list, shown }) {
  const count = shown.length;
  list.querySelector("summary").textContent =
    `${count} detection${count === 1 ? "" : "s"} with score > ${state.threshold.toFixed(2)}`;
  list.querySelector("ol").replaceChildren(
    ...shown.map((detection) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = classColor(detection.label);
      item.append(swatch, `${detection.class_name} ${detection.score.toFixed(2)}`);
      return item;
    }),
  );
}

// Pointer position → original-image pixels (the canvas may be shown scaled, inside its border).
function imagePoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return [
    ((event.clientX - rect.left - canvas.clientLeft) * canvas.width) / canvas.clientWidth,
    ((event.clientY - rect.top - canvas.clientTop) * canvas.height) / canvas.clientHeight,
  ];
}

function hover(panel, event) {
  const [x, y] = imagePoint(panel.canvas, event);
  const area = ([x1, y1, x2, y2]) => (x2 - x1) * (y2 - y1);
  const under = panel.shown
    .filter(({ bbox: [x1, y1, x2, y2] }) => x >= x1 && x <= x2 && y >= y1 && y <= y2)
    .sort((a, b) => area(a.bbox) - area(b.bbox)); // the innermost box wins
  const tooltip = $("tooltip");
  tooltip.hidden = !under.length;
  if (!under.length) return;
  tooltip.textContent = `${under[0].class_name} ${under[0].score.toFixed(2)}`;
  tooltip.style.left = `${event.clientX + 12}px`;
  tooltip.style.top = `${event.clientY + 12}px`;
}

// ---- attention --------------------------------------------------------------------------------

async function showAttention(panel, event) {
  const variant = panel.result.variant;
  const model = state.models.get(variant);
  const type = model?.architecture.attention_type;
  if (!type) {
    setStatus(`${variant} has no attention blocks.`, true);
    return;
  }
  const clamp = (value, size) => Math.min(Math.max(value, 0), size - 0.5); // inside the image
  const [px, py] = imagePoint(panel.canvas, event);
  const [x, y] = [clamp(px, panel.canvas.width), clamp(py, panel.canvas.height)];
  const stage = $("att-stage").value;
  const block = $("att-block").value || "0";
  const query = new URLSearchParams({ variant, x: x.toFixed(1), y: y.toFixed(1), stage, block, format: "image" });
  setStatus(`Attention of ${variant} from (${x.toFixed(0)}, ${y.toFixed(0)})…`);
  const response = await postImage(`attention?${query}`);
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return;
  }
  if (state.attentionUrl) URL.revokeObjectURL(state.attentionUrl);
  state.attentionUrl = URL.createObjectURL(await response.blob());
  $("attention-image").src = state.attentionUrl;
  $("attention-image").dataset.variant = variant;
  const independent =
    type === "0010" ? " Type 0010 attends by key content only: every query point gets this same map." : "";
  $("attention-caption").textContent =
    `${variant} (attention ${type}), stage ${stage} block ${block}, mean over heads, ` +
    `query (${x.toFixed(0)}, ${y.toFixed(0)}) marked.${independent}`;
  $("attention-figure").hidden = false;
  setStatus("Attention map below.");
}

// ---- wiring -----------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => report(useFile(event.target.files[0])));
  $("variant").addEventListener("change", () => report(run()));
  $("threshold").addEventListener("input", (event) => {
    state.threshold = Number(event.target.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    state.panels.forEach(draw);
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    report(useFile(event.dataTransfer.files[0]));
  });
  // a file dropped beside the target must not navigate away from the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  state.threshold = Number($("threshold").value);
  $("threshold-value").textContent = state.threshold.toFixed(2);
}

// A failed request (server gone, network error) ends up on the status line.
function report(promise) {
  promise.catch((error) => setStatus(`${error}`, true));
}

wire();
report(loadModels());
