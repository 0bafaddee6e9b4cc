// The service's page: queries by upload or by clicking a result, top-k and
// radius, the query's bits, adds and removals (with the token, when the
// service needs one). Talks only to the service that served it.
"use strict";

const $ = (id) => document.getElementById(id);
let lastQuery = null;          // {file} or {id}: what the grid shows the results of
let mutations = "open";        // "token" when adds and removals need the token

async function call(method, path, body) {
  const headers = {};
  const token = $("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, {method, body, headers});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}

function say(text) { $("status").textContent = text || ""; }

async function showHealth() {
  try {
    const h = await (await fetch("/health")).json();
    if (!h.ready) { $("health").textContent = "opening the database…"; setTimeout(showHealth, 1000); return; }
    mutations = h.mutations;
    $("health").textContent = `${h.arch}, ${h.bit} bits, ${h.database_size.toLocaleString()} images, index ${h.index}`;
    $("token-field").hidden = mutations !== "token";
    updateButtons();
  } catch (err) { $("health").textContent = "service unreachable: " + err.message; }
}

function canChange() { return mutations === "open" || $("token").value !== ""; }

function updateButtons() {
  $("add-field").hidden = !canChange();
  for (const b of document.querySelectorAll(".remove")) b.hidden = !canChange();
}

async function search() {
  if (!lastQuery) return;
  const form = new FormData();
  if (lastQuery.file) form.append("image", lastQuery.file);
  else form.append("ids", String(lastQuery.id));
  form.append("topk", $("topk").value);
  if ($("radius").value !== "") form.append("radius", $("radius").value);
  say("searching…");
  try {
    const data = await call("POST", "/search", form);
    render(data);
    say("");
  } catch (err) { say(err.message); }
}

function render(data) {
  const answer = data.queries[0];
  $("query").hidden = false;
  $("query-image").src = lastQuery.file ? URL.createObjectURL(lastQuery.file) : `/thumbs/${lastQuery.id}`;
  $("query-name").textContent = lastQuery.file ? lastQuery.file.name : `database image ${lastQuery.id}: ${answer.query.path}`;
  $("query-bits").textContent = answer.code;
  const t = data.timings;
  $("timings").textContent = `${answer.results.length} of ${data.database_size.toLocaleString()} images; ` +
    `search ${t.search_ms.toFixed(1)} ms, total ${t.total_ms.toFixed(1)} ms`;
  const grid = $("grid");
  grid.replaceChildren();
  for (const r of answer.results) {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.id = r.id;
    tile.dataset.distance = r.distance;
    const img = document.createElement("img");
    img.src = `/thumbs/${r.id}`;
    img.alt = r.path;
    img.title = "search with this image";
    img.addEventListener("click", () => { lastQuery = {id: r.id}; search(); });
    const caption = document.createElement("figcaption");
    caption.innerHTML = `<div class="distance">distance ${r.distance}</div>` +
      `<div class="labels">labels ${r.labels.length ? r.labels.join(", ") : "none"}</div>` +
      `<div class="path">#${r.id} ${r.path}</div>`;
    const remove = document.createElement("button");
    remove.className = "remove";
    remove.textContent = "remove";
    remove.hidden = !canChange();
    remove.addEventListener("click", () => removeImage(r.id));
    tile.append(img, caption, remove);
    grid.append(tile);
  }
}

async function removeImage(id) {
  try {
    await call("DELETE", `/images/${id}`);
    if (lastQuery.id === id) { lastQuery = null; $("grid").replaceChildren(); }
    else if (lastQuery.id !== undefined && lastQuery.id > id) lastQuery.id -= 1;   // ids after it move up
    await showHealth();
    await search();
    say(`removed image ${id}`);
  } catch (err) { say(err.message); }
}

async function addImages(files) {
  const form = new FormData();
  for (const f of files) form.append("images", f);
  try {
    const data = await call("POST", "/images", form);
    await showHealth();
    await search();
    say(`added ${data.added.map((a) => "#" + a.id).join(", ")}`);
  } catch (err) { say(err.message); }
}

function queryFile(file) { if (file) { lastQuery = {file}; search(); } }

$("file-input").addEventListener("change", (e) => queryFile(e.target.files[0]));
$("add-input").addEventListener("change", (e) => addImages(e.target.files));
$("topk").addEventListener("change", search);
$("radius").addEventListener("change", search);
$("token").addEventListener("input", updateButtons);
const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  queryFile(e.dataTransfer.files[0]);
});
showHealth();
