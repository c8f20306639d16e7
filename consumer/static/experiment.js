// The runs of one experiment: status, start, duration, tags and last metric values,
// with checkboxes to pick runs for the compare view; archive or delete the experiment.
import {
  api, el, experimentPage, formatDuration, formatTime, formatValue, header, pathParam, runDuration, runPage,
  showError, statusBadge, tagChips, withToken,
} from "./common.js";
import { renderExperimentActions } from "./storage_actions.js";

const experiment = pathParam("/experiments/");
const selected = new Set();

function metricList(metrics) {
  const entries = Object.entries(metrics ?? {});
  if (!entries.length) return "";
  return el("ul", { className: "metrics" }, entries.map(([name, value]) =>
    el("li", {}, el("span", { className: "metric-name" }, name), " ", el("span", { className: "value" }, formatValue(value)))));
}

function runRow(run) {
  const box = el("input", { type: "checkbox", checked: selected.has(run.id), title: "select for compare" });
  box.dataset.run = run.id;
  box.addEventListener("change", () => {
    if (box.checked) selected.add(run.id);
    else selected.delete(run.id);
    updateCompare();
  });
  return el("tr", { dataset: { run: run.id } },
    el("td", {}, box),
    el("td", {}, el("a", { href: runPage(run.id) }, run.display_name || run.id),
      run.display_name && run.display_name !== run.id ? el("div", { className: "muted small" }, run.id) : null),
    el("td", {}, statusBadge(run.status)),
    el("td", {}, formatTime(run.started_at ?? run.created_at)),
    el("td", { className: "num" }, formatDuration(runDuration(run))),
    el("td", {}, el("div", { className: "chips" }, tagChips(run.tags))),
    el("td", {}, metricList(run.metrics)));
}

function updateCompare() {
  const link = document.getElementById("compare");
  const ids = [...selected];
  const ready = ids.length >= 2;
  link.classList.toggle("disabled", !ready);
  link.setAttribute("aria-disabled", String(!ready));
  if (ready) link.href = withToken(`/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
  else link.removeAttribute("href");
  document.getElementById("selected").textContent = ids.length ? `${ids.length} selected` : "";
}

async function load() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams({ experiment });
  const status = form.elements.status.value;
  const tag = form.elements.tag.value.trim();
  if (status) params.set("status", status);
  if (tag) params.set("tag", tag);
  const { runs } = await api(`/api/v1/runs?${params}`);
  document.querySelector("#runs tbody").replaceChildren(...runs.map(runRow));
  document.getElementById("empty").hidden = runs.length > 0;
  const shown = new Set(runs.map((run) => run.id));
  for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
  document.getElementById("select-all").checked = runs.length > 0 && selected.size === runs.length;
  updateCompare();
  document.body.dataset.ready = "true";
}

function main() {
  header([experiment, experimentPage(experiment)]);
  document.title = `runstream: ${experiment}`;
  document.getElementById("title").textContent = experiment;
  renderExperimentActions(document.getElementById("actions"), experiment, () => load().catch(showError));
  const form = document.getElementById("filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch(showError);
  });
  document.getElementById("select-all").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll("#runs tbody input[type=checkbox]")) {
      box.checked = event.target.checked;
      if (box.checked) selected.add(box.dataset.run);
      else selected.delete(box.dataset.run);
    }
    updateCompare();
  });
  document.getElementById("compare").addEventListener("click", (event) => {
    if (selected.size < 2) event.preventDefault();
  });
  return load();
}

main().catch(showError);
