// The search page of `polyalign serve`: reads /info, sends the query to /search as multipart, shows the hits.
"use strict";

const $ = (id) => document.getElementById(id);
let card = null;

function headers() {
  const token = sessionStorage.getItem("polyalign-token") || $("token").value;
  return token ? { Authorization: "Bearer " + token } : {};
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this server needs its token: type it above and search again");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function queryRow(modality) {
  const row = document.createElement("div");
  row.className = "query";
  row.innerHTML = `<label><input type="checkbox" class="use"> <span></span></label>
    <input type="file" class="file"><input type="text" class="text" placeholder="or type text, or [numbers]">
    <div class="preview"></div>`;
  row.querySelector("span").textContent = modality;
  row.dataset.modality = modality;
  const use = row.querySelector(".use");
  for (const input of row.querySelectorAll(".file, .text")) {
    input.addEventListener("input", () => { use.checked = true; refreshTargets(); });
  }
  row.querySelector(".file").addEventListener("change", () => preview(row));
  use.addEventListener("change", refreshTargets);
  return row;
}

// what the chosen file holds, shown beside it: a picture, a player, the start of a text, or its name and size
async function preview(row) {
  const box = row.querySelector(".preview");
  const file = row.querySelector(".file").files[0];
  box.replaceChildren();
  if (!file) return;
  let shown;
  if (file.type.startsWith("image/")) {
    shown = document.createElement("img");
    shown.alt = `query ${row.dataset.modality}: ${file.name}`;
  } else if (file.type.startsWith("audio/")) {
    shown = document.createElement("audio");
    shown.controls = true;
  }
  if (shown) {
    shown.src = URL.createObjectURL(file);
  } else {
    shown = document.createElement("span");
    shown.textContent = file.type.startsWith("text/") ? (await file.slice(0, 200).text()).trim()
      : `${file.name} (${file.size.toLocaleString()} bytes)`;
  }
  box.append(shown);
}

function chosen() {
  return [...document.querySelectorAll(".query")].filter((row) => row.querySelector(".use").checked);
}

// a modality in the query cannot be the target: its option is greyed, and the target moves to one that is not
function refreshTargets() {
  const used = new Set(chosen().map((row) => row.dataset.modality));
  const target = $("target");
  for (const option of target.options) option.disabled = used.has(option.value);
  if (target.selectedOptions[0]?.disabled) {
    const free = [...target.options].find((option) => !option.disabled);
    if (free) target.value = free.value;
  }
  const left = [...target.options].some((option) => !option.disabled);
  $("go").disabled = !left;
  $("target-note").textContent = left || !target.options.length ? ""
    : "every modality with candidates is in the query: untick one to search for it";
}

async function loadCard() {
  try {
    card = await (await call("/info")).json();
  } catch (error) {
    $("model").textContent = error.message;
    return;
  }
  const targets = card.candidates.map((c) => c.modality);
  $("model").textContent = `${card.name}: ${card.modalities.join(", ")}; embeddings of ${card.embed_dim}; ` +
    `scored by ${card.scored_by}. Candidates: ` +
    (card.candidates.map((c) => `${c.count} ${c.modality} (${c.ranking}` +
      (c.distinct < c.count ? `, ${c.distinct} distinct` : "") + ")").join(", ") || "none");
  $("queries").replaceChildren(...card.modalities.map(queryRow));
  $("target").replaceChildren(...targets.map((m) => new Option(m, m)));
  $("k").max = card.limits.max_k;
  refreshTargets();
}

async function mediaElement(hit, target) {
  const response = await call(hit.media);
  const type = response.headers.get("content-type") || "";
  const url = URL.createObjectURL(await response.blob());
  const element = document.createElement(type.startsWith("audio/") ? "audio" : "img");
  if (element.tagName === "AUDIO") element.controls = true;
  else element.alt = `${target} ${hit.id}`;
  element.src = url;
  return element;
}

async function showHits(result) {
  const items = await Promise.all(result.hits.map(async (hit) => {
    const li = document.createElement("li");
    li.className = "hit";
    if (hit.text !== null) {
      const p = document.createElement("p");
      p.className = "text";
      p.textContent = hit.text;
      li.append(p);
    } else if (hit.media) {
      li.append(await mediaElement(hit, result.target));
    } else if (hit.value !== null) {
      const p = document.createElement("p");
      p.className = "value";
      p.textContent = hit.value;
      li.append(p);
    }
    const caption = document.createElement("div");
    caption.innerHTML = `<b></b> <span class="id"></span><br><span class="score"></span>`;
    caption.querySelector("b").textContent = `#${hit.rank}`;
    caption.querySelector(".id").textContent = String(hit.id);
    caption.querySelector(".score").textContent = (hit.label !== null ? `label ${hit.label} · ` : "") +
      `score ${hit.score.toFixed(4)}`;
    li.append(caption);
    if (hit.same_value.length) {
      const same = document.createElement("p");
      same.className = "same";
      same.textContent = `same ${result.target} as ${hit.same_value.join(", ")}`;
      li.append(same);
    }
    return li;
  }));
  $("results").replaceChildren(...items);
}

async function search(event) {
  event.preventDefault();
  const status = $("status");
  status.className = "";
  $("results").replaceChildren();
  if ($("token").value) sessionStorage.setItem("polyalign-token", $("token").value);
  if (!card) await loadCard();
  const form = new FormData();
  for (const row of chosen()) {
    const file = row.querySelector(".file").files[0];
    const text = row.querySelector(".text").value;
    if (file) form.append(row.dataset.modality, file, file.name);
    else if (text) form.append(row.dataset.modality, text);
  }
  if (![...form.keys()].length) {
    status.className = "error";
    status.textContent = "no query: upload a file or type a value for at least one modality other than the target";
    return;
  }
  form.append("target", $("target").value);
  form.append("k", $("k").value);
  status.textContent = "searching…";
  try {
    const result = await (await call("/search", { method: "POST", body: form })).json();
    const repeats = result.candidates - result.distinct;
    status.textContent = `best ${result.hits.length} ${result.target} of ${result.candidates} for ` +
      `${result.query.join(" + ")} (${result.scored_by}, ${result.ranking} ranking)` +
      (repeats ? `. ${repeats} of the ${result.candidates} candidates repeat another's value: each value is ` +
        `shown once, with its other ids` : "");
    await showHits(result);
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
}

$("search").addEventListener("submit", search);
$("token").addEventListener("change", loadCard);
loadCard();
