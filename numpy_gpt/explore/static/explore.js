// numpy_gpt explore: draws what the server computed. No number is computed here: every probability
// and weight comes from the JSON API (numpy_gpt/explore/server.py); this file only lays them out.
"use strict";

const $ = (id) => document.getElementById(id);
const GENERATE_FIELDS = ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"];
const ATTENTION_TOKENS = 128;   // the heatmap shows at most the last 128 tokens of the text
let info = null;                // the model, from /api/info
let currentIds = null;          // the token ids the attention and the logit lens are shown for
let lensPositions = null;       // null: the last ones (the server's default)
let busy = false;
let askedFor = {};              // a layer or head from the URL that the model does not have

// -- talking to the server ---------------------------------------------------------------------------
async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const answer = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
  if (!response.ok || answer.error) throw new Error(answer.error || response.statusText);
  return answer;
}

async function* ndjson(response) {
  // The generation stream: one JSON object per line, yielded as soon as its line has arrived.
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.trim()) yield JSON.parse(line);
    }
  }
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// -- small drawing helpers ---------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function visible(piece) {
  // Whitespace made visible: a space as a middle dot, a newline as a return arrow, a tab as an arrow.
  return piece.replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
}

function formatProb(p) {
  return p >= 0.0001 || p === 0 ? p.toFixed(4) : p.toExponential(1);
}

function tokenChip(token, cls = "") {
  return el("span", {class: `token ${cls}`, "data-id": token.id, title: `id ${token.id}`},
            el("span", {class: "piece", text: visible(token.piece)}),
            el("span", {class: "id", text: String(token.id)}));
}

function showTokens(container, tokens) {
  container.replaceChildren(...tokens.map((t) => tokenChip(t)));
  container.setAttribute("data-count", tokens.length);
}

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function viridis(w) {
  // The colour of a weight in [0, 1], as plots.plot_attention draws it (matplotlib's viridis, 5 stops).
  const x = Math.min(1, Math.max(0, w)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// -- the page's state in its URL ---------------------------------------------------------------------
function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const values = {};
  for (const [key, value] of params) values[key] = value;
  return values;
}

let urlState = {};               // what the page's URL says: the run's settings, the layer and head shown

function writeUrl(values) {
  urlState = {...values, layer: $("layer").value, head: $("head").value};
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(urlState)) {
    if (value !== "" && value !== null && value !== undefined) params.set(key, value);
  }
  const url = `${window.location.pathname}?${params.toString().replace(/\+/g, "%20")}`;
  window.history.replaceState(null, "", url);
  $("share-link").href = url;
  $("share").hidden = false;
}

// -- a language model: generation, step by step ------------------------------------------------------
function generateValues() {
  const values = {};
  for (const name of GENERATE_FIELDS) values[name] = $(name).value.trim() === "" ? "" : $(name).value;
  return values;
}

function stepCard(step) {
  const list = el("ol", {class: "candidates"});
  let pickedShown = false;
  for (const candidate of step.top) {
    const picked = candidate.id === step.id;
    pickedShown = pickedShown || picked;
    list.append(candidateRow(candidate, picked));
  }
  if (!pickedShown) {                           // sampled from outside the ten most likely
    list.append(candidateRow({id: step.id, piece: step.piece, prob: step.prob}, true, step.rank));
  }
  return el("div", {class: "step", "data-step": step.step, "data-id": step.id, "data-prob": step.prob,
                    "data-rank": step.rank},
            el("div", {class: "step-head", text: `step ${step.step + 1}`}), list);
}

function candidateRow(candidate, picked, rank = null) {
  const row = el("li", {class: picked ? "candidate picked" : "candidate", "data-id": candidate.id,
                        "data-prob": candidate.prob, title: `id ${candidate.id}: probability ${candidate.prob}`});
  if (picked) row.setAttribute("data-picked", "true");
  const bar = el("span", {class: "bar"});
  bar.style.width = `${(100 * candidate.prob).toFixed(2)}%`;
  row.append(bar, el("span", {class: "piece", text: (picked ? "\u2605 " : "") + visible(candidate.piece)}),
             el("span", {class: "prob", text: (rank ? `#${rank} ` : "") + formatProb(candidate.prob)}));
  return row;
}

async function runGenerate(values) {
  if (busy) return;
  busy = true;
  setReady(false);
  clearError();
  $("generate-button").disabled = true;
  $("steps").replaceChildren();
  $("generated-text").replaceChildren();
  $("decoded").hidden = true;
  let promptIds = [];
  const newIds = [];
  try {
    const response = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                                   body: JSON.stringify(values)});
    if (!response.ok) {
      const answer = await response.json().catch(() => ({error: response.statusText}));
      throw new Error(answer.error);
    }
    for await (const event of ndjson(response)) {
      if (event.event === "prompt") {
        promptIds = event.tokens.map((t) => t.id);
        showTokens($("prompt-tokens"), event.tokens);
        $("generated-text").append(...event.tokens.map((t) => tokenChip(t, "prompt")));
        $("mode-note").textContent = event.greedy
          ? "Temperature 0 is greedy: the most likely token is always picked; the probabilities shown are the model's own (temperature 1)."
          : `Sampled with seed ${event.seed}: the probabilities are after temperature, top-k and top-p, the distribution the token is drawn from.`;
        writeUrl({...values, seed: event.greedy ? values.seed : event.seed});
      } else if (event.event === "step") {
        newIds.push(event.id);
        $("steps").append(stepCard(event));
        const chip = tokenChip(event, "generated");
        chip.setAttribute("data-step", event.step);
        chip.title = `step ${event.step + 1}: probability ${formatProb(event.prob)} (rank ${event.rank})`;
        $("generated-text").append(chip);
      } else if (event.event === "done") {
        $("decoded").textContent = event.text;
        $("decoded").hidden = false;
      } else if (event.event === "error") {
        throw new Error(event.error);
      }
    }
    $("generated-text").setAttribute("data-new-tokens", newIds.length);
    const all = promptIds.concat(newIds);
    await setCurrentText(all.slice(-info.context_length), null);
  } catch (error) {
    showError(error.message);
  } finally {
    busy = false;
    $("generate-button").disabled = false;
    setReady(true);
  }
}

// -- a classifier, an encoder -------------------------------------------------------------------------
async function runClassify(text) {
  setReady(false);
  clearError();
  try {
    const answer = await api("/api/classify", {text});
    writeUrl({text});
    showTokens($("classify-tokens"), answer.tokens);
    const chips = $("classify-tokens").children;
    for (let i = chips.length - answer.padding; i < chips.length; i++) chips[i].classList.add("pad");
    $("padding-note").textContent = answer.padding
      ? `The last ${answer.padding} tokens are padding, as in training; the classifier reads the last position.` : "";
    $("classes").replaceChildren(...answer.classes.map((c) => {
      const bar = el("span", {class: "bar"});
      bar.style.width = `${(100 * c.prob).toFixed(2)}%`;
      return el("div", {class: "class-row", "data-label": c.label, "data-prob": c.prob},
                el("span", {class: "label", text: c.label}), el("span", {class: "track"}, bar),
                el("span", {class: "prob", text: formatProb(c.prob)}));
    }));
    await setCurrentText(answer.tokens.map((t) => t.id), null);
  } catch (error) {
    showError(error.message);
  }
  setReady(true);
}

async function runFill(text) {
  setReady(false);
  clearError();
  try {
    const answer = await api("/api/fill-mask", {text});
    writeUrl({text});
    showTokens($("fill-tokens"), answer.tokens);
    $("fills").replaceChildren(...answer.masks.map((mask, i) => {
      const list = el("ol", {class: "candidates"});
      mask.candidates.forEach((c, k) => list.append(candidateRow({id: k, piece: c.piece, prob: c.prob}, k === 0)));
      return el("div", {class: "step", "data-position": mask.position},
                el("div", {class: "step-head", text: `[MASK] ${i + 1} (position ${mask.position})`}), list);
    }));
    await setCurrentText(answer.tokens.map((t) => t.id),
                         answer.masks.map((m) => m.position).slice(0, info.lens_positions));
  } catch (error) {
    showError(error.message);
  }
  setReady(true);
}

// -- attention and the logit lens over the current text ------------------------------------------------
function setCurrentText(ids, positions) {
  currentIds = ids;
  lensPositions = positions;
  $("attention-section").hidden = false;
  $("lens-section").hidden = false;
  return Promise.all([drawAttention(), drawLens()]);
}

function setReady(ready) {
  // data-ready="true" once a run and its attention and lens are drawn (or an error is shown)
  document.body.setAttribute("data-ready", ready ? "true" : "false");
}

async function drawAttention() {
  const ids = currentIds.slice(-ATTENTION_TOKENS);
  const layer = askedFor.layer ?? $("layer").value;
  const head = askedFor.head ?? $("head").value;
  askedFor = {};
  try {
    const answer = await api("/api/attention", {ids, layer, head});
    $("attention").replaceChildren(heatmap(answer));
    $("attention-section").setAttribute("data-causal", answer.causal);
    $("attention-readout").textContent = ids.length < currentIds.length
      ? `The last ${ids.length} tokens of ${currentIds.length}.` : "\u00a0";
  } catch (error) {
    showError(error.message);
  }
}

function heatmap(answer) {
  const n = answer.tokens.length;
  const cell = Math.max(8, Math.min(30, Math.floor(560 / n)));
  const labels = answer.tokens.map((t) => visible(t.piece));
  const longest = Math.min(14, Math.max(...labels.map((s) => s.length)));
  const margin = 12 + 7 * longest;              // room for the labels, left and on top
  const size = margin + n * cell;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  const attrs = {width: size + 4, height: size + 4, viewBox: `0 0 ${size + 4} ${size + 4}`, class: "heatmap",
                 "data-layer": answer.layer, "data-head": answer.head, "data-tokens": n, role: "img",
                 "aria-label": `attention of layer ${answer.layer}, head ${answer.head}`};
  for (const [k, v] of Object.entries(attrs)) svg.setAttribute(k, v);
  const short = (s) => (s.length > 14 ? s.slice(0, 13) + "\u2026" : s);
  const fontSize = Math.min(12, Math.max(8, cell - 2));
  labels.forEach((label, i) => {
    const left = document.createElementNS(svgNS, "text");
    left.setAttribute("x", margin - 4);
    left.setAttribute("y", margin + i * cell + cell / 2);
    left.setAttribute("class", "axis left");
    left.setAttribute("font-size", fontSize);
    left.textContent = short(label);
    const top = document.createElementNS(svgNS, "text");
    const x = margin + i * cell + cell / 2;
    top.setAttribute("transform", `translate(${x},${margin - 4}) rotate(-60)`);
    top.setAttribute("class", "axis top");
    top.setAttribute("font-size", fontSize);
    top.textContent = short(label);
    svg.append(left, top);
  });
  const grid = document.createElementNS(svgNS, "g");
  grid.setAttribute("class", "cells");
  answer.weights.forEach((row, i) => row.forEach((w, j) => {
    const rect = document.createElementNS(svgNS, "rect");
    const masked = answer.causal && j > i;
    rect.setAttribute("x", margin + j * cell);
    rect.setAttribute("y", margin + i * cell);
    rect.setAttribute("width", cell);
    rect.setAttribute("height", cell);
    rect.setAttribute("fill", masked ? "#eeeeee" : viridis(w));
    rect.setAttribute("data-query", i);
    rect.setAttribute("data-key", j);
    rect.setAttribute("data-weight", w);
    if (masked) rect.setAttribute("data-masked", "true");
    grid.append(rect);
  }));
  svg.append(grid);
  const focus = document.createElementNS(svgNS, "rect");
  focus.setAttribute("class", "focus");
  focus.setAttribute("width", cell);
  focus.setAttribute("height", cell);
  focus.setAttribute("visibility", "hidden");
  svg.append(focus);
  const read = (event) => {
    const rect = event.target;
    if (!rect.hasAttribute || !rect.hasAttribute("data-query")) return;
    const i = Number(rect.getAttribute("data-query"));
    const j = Number(rect.getAttribute("data-key"));
    focus.setAttribute("x", rect.getAttribute("x"));
    focus.setAttribute("y", rect.getAttribute("y"));
    focus.setAttribute("visibility", "visible");
    const what = rect.hasAttribute("data-masked") ? "masked: a token never sees the future"
      : formatProb(Number(rect.getAttribute("data-weight")));
    $("attention-readout").textContent = `\u201c${labels[i]}\u201d (${i}) looks at \u201c${labels[j]}\u201d (${j}): ${what}`;
  };
  svg.addEventListener("pointerover", read);
  svg.addEventListener("click", read);
  return svg;
}

async function drawLens() {
  try {
    const body = {ids: currentIds};
    if (lensPositions && lensPositions.length) body.positions = lensPositions;
    const answer = await api("/api/lens", body);
    $("lens").replaceChildren(lensTable(answer));
  } catch (error) {
    if (info.kind === "classifier") $("lens-section").hidden = true;   // a pooled classifier has none
    else showError(error.message);
  }
}

function lensTable(answer) {
  const table = el("table", {class: "lens", "data-rows": answer.rows.length, "data-positions": answer.positions.length});
  const corner = info.kind === "language model" ? "next token after \u2192" : "at \u2192";
  const head = el("tr", {}, el("th", {class: "corner", text: corner}));
  for (const p of answer.positions) {
    head.append(el("th", {class: "position", "data-position": p, title: `position ${p}`,
                          text: visible(answer.tokens[p].piece)}));
  }
  const body = el("tbody");
  answer.rows.forEach((row, r) => {
    const tr = el("tr", {"data-layer": answer.layers[r]}, el("th", {text: answer.layers[r]}));
    const show = info.kind === "classifier" ? (label) => label : visible;   // class names as they are
    row.forEach((candidates) => {
      const best = candidates[0];
      const td = el("td", {"data-id": best.id, "data-prob": best.prob,
                           title: candidates.map((c) => `${show(c.piece)}  ${formatProb(c.prob)}`).join("\n")},
                    el("span", {class: "piece", text: show(best.piece)}),
                    el("span", {class: "prob", text: formatProb(best.prob)}));
      td.style.setProperty("--p", best.prob);
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(el("thead", {}, head), body);
  return table;
}

// -- start -------------------------------------------------------------------------------------------
function fillSelect(select, count, label) {
  select.replaceChildren(...Array.from({length: count}, (_, i) => el("option", {value: i, text: `${label} ${i}`})));
}

let tokenTimer = null;
function previewTokens() {
  clearTimeout(tokenTimer);
  tokenTimer = setTimeout(async () => {
    const text = $("prompt").value;
    if (!text) { $("prompt-tokens").replaceChildren(); return; }
    try {
      showTokens($("prompt-tokens"), (await api("/api/tokens", {text})).tokens);
    } catch (error) { /* the error is shown when the prompt is run */ }
  }, 250);
}

async function start() {
  try {
    info = await api("/api/info");
  } catch (error) {
    showError(`The server did not answer: ${error.message}`);
    setReady(true);
    return;
  }
  const size = `${info.n_layers} layers, ${info.n_heads} heads, ${info.emb_dim} wide, context ${info.context_length}, ` +
               `vocabulary ${info.vocab_size.toLocaleString()}, ${info.parameters.toLocaleString()} parameters`;
  const article = /^[aeiou]/.test(info.kind) ? "an" : "a";
  $("model-info").textContent = `${info.name ? info.name + ": " : ""}${article} ${info.kind} (${size})`;
  $("lens-what").textContent = {
    "language model": "the most likely next token at each position",
    "classifier": "the most likely class at each position (the classifier reads the last)",
    "encoder": "the most likely token at each [MASK] (what the model would fill in)",
  }[info.kind];
  document.body.setAttribute("data-kind", info.kind);
  fillSelect($("layer"), info.n_layers, "layer");
  fillSelect($("head"), info.n_heads, "head");
  const url = readUrl();
  for (const name of ["layer", "head"]) {
    if (url[name] === undefined) continue;
    if ([...$(name).options].some((o) => o.value === url[name])) $(name).value = url[name];
    else askedFor[name] = url[name];            // sent as it is: the server says what is wrong with it
  }
  for (const name of ["layer", "head"]) {
    $(name).addEventListener("change", () => {
      if (Object.keys(urlState).length) writeUrl({...urlState});
      drawAttention();
    });
  }
  if (info.kind === "language model") {
    $("generate-section").hidden = false;
    if (info.prompt) $("prompt").value = info.prompt;        // the run's own sample prompt
    for (const name of GENERATE_FIELDS) if (url[name] !== undefined) $(name).value = url[name];
    $("generate-form").addEventListener("submit", (event) => { event.preventDefault(); runGenerate(generateValues()); });
    $("prompt").addEventListener("input", previewTokens);
    if (url.prompt !== undefined) await runGenerate(generateValues());
    else previewTokens();
  } else if (info.kind === "classifier") {
    $("classify-section").hidden = false;
    if (url.text !== undefined) $("classify-text").value = url.text;
    $("classify-form").addEventListener("submit", (event) => { event.preventDefault(); runClassify($("classify-text").value); });
    if (url.text !== undefined) await runClassify(url.text);
  } else {
    $("fill-section").hidden = false;
    if (url.text !== undefined) $("fill-text").value = url.text;
    $("fill-form").addEventListener("submit", (event) => { event.preventDefault(); runFill($("fill-text").value); });
    if (url.text !== undefined) await runFill(url.text);
  }
  if (!document.body.hasAttribute("data-ready")) setReady(true);     // nothing to run on load
}

document.addEventListener("DOMContentLoaded", start);
