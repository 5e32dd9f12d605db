// chestdx viewer: log in with an API token, upload studies, follow their jobs, scroll slices with Grad-CAM or
// the lesion map, read the quantification.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("chestdx-token"), studies: [], chosen: null, record: null,
                slice: 0, imageUrl: null, timer: null };

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers })).then(async (response) => {
    if (response.status === 401) { logout("Your token was refused: log in again."); throw new Error("unauthorised"); }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return response;
  });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

// ---- log in / out
function showApp() {
  const loggedIn = Boolean(state.token);
  $("login").hidden = loggedIn; $("app").hidden = !loggedIn; $("logout").hidden = !loggedIn;
  if (loggedIn) { refreshStudies(); clearInterval(state.timer); state.timer = setInterval(refreshStudies, 2000); }
  else clearInterval(state.timer);
}

function logout(message) {
  sessionStorage.removeItem("chestdx-token"); state.token = null; state.chosen = null;
  $("login-error").textContent = message || ""; showApp();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  const response = await fetch("/studies?limit=1", { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) { $("login-error").textContent = "This token was refused."; return; }
  sessionStorage.setItem("chestdx-token", token); state.token = token; $("token").value = "";
  $("login-error").textContent = ""; showApp();
});
$("logout").addEventListener("click", () => logout());

// ---- upload
function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.webkitRelativePath || file.name);
  if ($("kind").value) form.append("kind", $("kind").value);
  const request = new XMLHttpRequest();
  request.open("POST", "/studies");
  request.setRequestHeader("Authorization", "Bearer " + state.token);
  $("progress").hidden = false; $("progress").value = 0;
  $("upload-status").textContent = `uploading ${files.length} file(s)...`;
  request.upload.onprogress = (e) => { if (e.lengthComputable) $("progress").value = 100 * e.loaded / e.total; };
  request.onload = () => {
    $("progress").hidden = true;
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (e) { /* not JSON */ }
    if (request.status === 202) {
      $("upload-status").textContent = "queued: the result appears in the list";
      refreshStudies().then(() => choose(body.id));
    } else {
      $("upload-status").textContent = "refused: " + (body.detail || request.statusText);
    }
  };
  request.onerror = () => { $("progress").hidden = true; $("upload-status").textContent = "upload failed: network error"; };
  request.send(form);
}

const drop = $("drop");
drop.addEventListener("click", () => $("files").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]); });
$("files").addEventListener("change", () => { upload([...$("files").files]); $("files").value = ""; });

// ---- study list
function resultText(study) {
  if (study.status === "done") {
    return `${study.decision} ${(100 * study.probabilities[study.decision]).toFixed(0)}%`;
  }
  return study.status === "failed" ? (study.error || "failed") : "";
}

async function refreshStudies() {
  if (!state.token) return;
  try { state.studies = await (await api("/studies")).json(); } catch (e) { return; }
  const body = $("studies").tBodies[0];
  body.replaceChildren(...state.studies.map((study) => el("tr", {
      tabindex: "0", class: study.id === state.chosen ? "chosen" : "", "data-id": study.id,
      onclick: () => choose(study.id), onkeydown: (e) => { if (e.key === "Enter") choose(study.id); } },
    el("td", {}, new Date(study.created).toLocaleString()),
    el("td", { class: "status-" + study.status }, study.status),
    el("td", {}, resultText(study)))));
  const chosen = state.studies.find((s) => s.id === state.chosen);
  if (chosen && !state.record && (chosen.status === "done" || chosen.status === "failed")) choose(chosen.id);
}

// ---- one study
async function choose(id) {
  state.chosen = id; state.record = null;
  for (const row of $("studies").tBodies[0].rows) row.classList.toggle("chosen", row.dataset.id === id);
  const study = await (await api("/studies/" + id)).json();
  const body = $("result-body");
  if (study.status !== "done") {
    body.replaceChildren(el("p", { class: study.status === "failed" ? "error" : "" },
      study.status === "failed" ? "Failed: " + study.error : `Study ${study.status}: the page updates when it is done.`));
    $("viewer-body").hidden = true; $("viewer-empty").hidden = false;
    return;
  }
  const record = study.result;
  state.record = record;
  showResult(id, record);
  const keys = (record.explanation || {}).slices || record.top_slices.map((s) => s.index);
  $("slice").max = record.study.n_slices - 1;
  $("viewer-body").hidden = false; $("viewer-empty").hidden = true;
  const goTo = (k) => el("button", { type: "button", onclick: () => showSlice(k) }, k);
  $("key-slices").replaceChildren(...keys.map(goTo));
  const lesionKeys = record.lesions ? record.lesions.key_slices.map((s) => s.index) : [];
  $("lesion-slices").replaceChildren(...lesionKeys.map(goTo));
  $("lesion-slices-line").hidden = !lesionKeys.length;
  // an overlay the study has none of cannot be chosen; the default is the first one it has
  const options = $("overlay").options;
  options[1].disabled = !record.explanation; options[2].disabled = !record.lesions;
  if (options[$("overlay").selectedIndex].disabled || $("overlay").value === "none") {
    $("overlay").value = record.explanation ? "gradcam" : record.lesions ? "lesion" : "none";
  }
  $("overlay").disabled = !record.explanation && !record.lesions;
  showSlice(keys.length ? keys[0] : 0);
}

function showResult(id, record) {
  const probabilities = Object.entries(record.probabilities).map(([name, p]) => el("div", { class: "prob" },
    el("span", {}, name), el("div", { class: "bar", role: "img", "aria-label": `${name} ${(100 * p).toFixed(1)}%` },
      el("span", { style: `width: ${100 * p}%` })), el("span", {}, (100 * p).toFixed(1) + "%")));
  const model = record.model;
  const reportLink = (format, text) => el("button", { type: "button", onclick: () => openReport(id, format) }, text);
  $("result-body").replaceChildren(
    el("p", { class: "decision" }, "Decision: " + record.decision),
    el("p", { class: "muted" }, Object.keys(record.probabilities).length === 2
      ? `threshold ${record.threshold.toFixed(2)} on ${Object.keys(record.probabilities)[1]}` : "most probable class"),
    ...probabilities,
    ...record.warnings.map((w) => el("p", { class: "warning" }, w)),
    ...quantificationView(record.quantification),
    el("h3", {}, "Model"),
    el("p", {}, `${model.name} (${model.recipe}), trained on ${model.trained_on || "?"}` +
      (model.val_auc != null ? `, validation AUC ${model.val_auc.toFixed(3)}` : "") +
      (model.test_auc_by_source ? ", test AUC by source: " + Object.entries(model.test_auc_by_source)
        .map(([source, auc]) => `${source} ${auc.toFixed(3)}`).join(", ") : "")),
    el("h3", {}, "Limitations"),
    el("ul", {}, ...record.limitations.map((text) => el("li", {}, text))),
    el("p", {}, reportLink("html", "Open report"), " ", reportLink("pdf", "Download PDF")),
    el("p", { class: "muted" }, `total ${record.timing_s.total.toFixed(2)} s`));
}

function quantificationView(q) {
  // the lesion segmenter's measurements of a CT study (chestdx.models.quantify)
  if (!q) return [];
  const c = q.chest, unit = q.volume_unit;
  const sides = [q.right_lung, q.left_lung, c];
  const num = (v, digits = 1) => (v == null ? "n/a" : v.toFixed(digits));
  const row = (name, cells) => el("tr", {}, el("th", { scope: "row" }, name), ...cells.map((v) => el("td", {}, v)));
  const table = el("table", { id: "quantification-table" },
    el("caption", { class: "muted" }, `segmenter ${q.model}; volumes in ${unit}`),
    el("thead", {}, el("tr", {}, el("th", {}, ""), ...["right", "left", "both"].map((t) => el("th", { scope: "col" }, t)))),
    el("tbody", {},
      row(`lung volume`, sides.map((s) => num(s.lung_volume))),
      row(`lesion volume`, sides.map((s) => num(s.lesion_volume))),
      row("involvement %", sides.map((s) => num(s.involvement_percent, 2))),
      row("ground-glass %", sides.map((s) => num(s.ground_glass_share_percent))),
      row("consolidation %", sides.map((s) => num(s.consolidation_share_percent))),
      row("score", [`${q.right_lung.score}/15`, `${q.left_lung.score}/15`, `${c.severity_score}/30`])));
  return [
    el("h3", {}, "Lesions"),
    el("p", { class: "category", id: "category" },
      `${c.category}: involvement ${c.involvement_percent.toFixed(1)}%, severity score ${c.severity_score}/30`),
    table,
    el("p", { class: "muted" }, "ground-glass % and consolidation % are shares of the lesion volume; " + q.scoring),
  ];
}

async function openReport(id, format) {
  try {
    const blob = await (await api(`/studies/${id}/report?format=${format}`)).blob();
    const url = URL.createObjectURL(blob);
    if (format === "html") window.open(url, "_blank");
    else Object.assign(document.createElement("a"), { href: url, download: `chestdx-${id}.pdf` }).click();
  } catch (e) { alert("Report: " + e.message); }
}

// ---- slices
function fitImage() {
  // zoom 100% fits the whole slice into the frame; more zooms in (the frame scrolls)
  const image = $("image"), frame = $("frame");
  if (!image.naturalWidth) return;
  const fit = Math.min((frame.clientWidth - 4) / image.naturalWidth, (frame.clientHeight - 4) / image.naturalHeight);
  image.style.width = `${Math.floor(image.naturalWidth * fit * $("zoom").value / 100)}px`;
}

async function showSlice(k) {
  if (!state.record) return;
  const n = state.record.study.n_slices;
  k = Math.max(0, Math.min(n - 1, k)); state.slice = k;
  $("slice").value = k; $("slice-label").textContent = `${k} / ${n - 1}`;
  const record = state.record, chosen = $("overlay").value;
  let overlay = "none", note = "";
  if (chosen === "gradcam") {
    const explained = ((record.explanation || {}).slices || []).includes(k);
    overlay = explained ? "gradcam" : "none";
    note = explained ? "Grad-CAM map of this slice (evidence for " + record.explanation.class + ")."
      : "No Grad-CAM map on this slice: maps exist for the key slices.";
  } else if (chosen === "lesion") {
    overlay = "lesion";
    const lesions = record.lesions;
    note = lesions.slices_with_lesion.includes(k) ? "Lesions found on this slice by " + lesions.model + "."
      : "No lesion found on this slice.";
    if (!lesions.segmented_slices.includes(k) && lesions.slices_with_lesion.includes(k)) {
      note += " (Labels of the nearest slice the segmenter ran on.)";
    }
  } else if (!record.explanation && !record.lesions) {
    note = "No overlay for this study: no Grad-CAM map (--explain-slices 0) and no lesion map (X-ray or --no-quantify).";
  }
  $("overlay-note").textContent = note;
  $("lesion-legend").hidden = overlay !== "lesion";
  const query = `window=${$("window").value}&overlay=${overlay}&opacity=${$("opacity").value / 100}`;
  const id = state.chosen;
  try {
    const blob = await (await api(`/studies/${id}/slices/${k}.png?${query}`)).blob();
    if (id !== state.chosen || k !== state.slice) return;
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = URL.createObjectURL(blob);
    const image = $("image");
    image.onload = fitImage;
    const shown = { gradcam: ", Grad-CAM overlay", lesion: ", lesion overlay", none: "" }[overlay];
    image.src = state.imageUrl; image.alt = `slice ${k}, ${$("window").value} window${shown}`;
  } catch (e) { $("overlay-note").textContent = e.message; }
}

$("slice").addEventListener("input", () => showSlice(Number($("slice").value)));
for (const id of ["window", "overlay", "opacity"]) $(id).addEventListener("change", () => showSlice(state.slice));
$("zoom").addEventListener("input", fitImage);
$("frame").addEventListener("wheel", (e) => { e.preventDefault(); showSlice(state.slice + Math.sign(e.deltaY)); }, { passive: false });
$("frame").addEventListener("keydown", (e) => {
  const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 }[e.key];
  if (step) { e.preventDefault(); showSlice(state.slice + step); }
});

showApp();
