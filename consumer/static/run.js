// The run page: status, properties, tags, metrics as live charts, tables, images, files
// and the output tail, kept current by the run's SSE stream without reloading.
//
// This module is the page's entry point: the details (header, facts, properties, tags,
// files), the output tail, and main(). The metric views (charts, scalars, tables,
// images) are in run_metrics.js; reading the record and following the stream, and how
// the two meet without gaps or doubles, in run_stream.js.
import {
  TERMINAL, api, el, experimentPage, fileUrl, formatDuration, formatTime, header, keyValueTable, pathParam, replace,
  runApi, runDuration, runPage, setStatus, showError, tagChips,
} from "./common.js";
import { closeStream, followRun, readingRecord } from "./run_stream.js";
import { renderRunActions } from "./storage_actions.js";

const runId = pathParam("/runs/");
const base = runApi(runId);
/** Output lines kept on the page. */
const OUTPUT_KEEP = 2000;

const $ = (id) => document.getElementById(id);

/** The page's copy of the run's details (status, tags, properties, files, ...). */
let run = null;

// ---- the run's details ---------------------------------------------------------------

function renderDetails() {
  renderSummary();
  renderProperties();
  renderTags();
  renderFiles();
}

function renderSummary() {
  const name = run.display_name || run.id;
  document.title = `runstream: ${name}`;
  header([run.experiment, experimentPage(run.experiment)], [name, null]);
  $("title").textContent = name;
  setStatus($("status"), run.status);
  const facts = [
    ["run", run.id],
    ["experiment", el("a", { href: experimentPage(run.experiment) }, run.experiment)],
    ["created", formatTime(run.created_at)],
    ["started", formatTime(run.started_at)],
    ["ended", formatTime(run.ended_at)],
    ["duration", el("span", { id: "duration" }, formatDuration(runDuration(run)))],
  ];
  if (run.parent_id) facts.push(["parent", el("a", { href: runPage(run.parent_id) }, run.parent_id)]);
  if (run.children?.length) {
    facts.push(["children", el("span", {}, run.children.map((child) =>
      el("a", { href: runPage(child), className: "child" }, child)))]);
  }
  replace($("facts"), keyValueTable(facts.filter(([, value]) => value !== "")));
  $("run-error").hidden = !run.error;
  $("run-error").textContent = run.error ?? "";
  renderRunActions($("actions"), run);
}

function renderProperties() {
  const entries = Object.entries(run.properties ?? {});
  replace($("properties"), entries.length ? keyValueTable(entries) : el("p", { className: "muted none" }, "none"));
}

function renderTags() {
  const chips = tagChips(run.tags);
  replace($("tags"), chips.length ? chips : el("p", { className: "muted none" }, "none"));
}

function renderFiles() {
  const files = run.files ?? [];
  if (!files.length) return replace($("files"), el("p", { className: "muted none" }, "none"));
  return replace($("files"), el("table", { className: "list files" },
    el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", { className: "num" }, "size"), el("th", {}, "sha256"))),
    el("tbody", {}, files.map((file) => el("tr", { dataset: { file: file.name } },
      el("td", {}, el("a", { href: fileUrl(runId, file.name), download: file.name.split("/").at(-1) }, file.name)),
      el("td", { className: "num" }, formatSize(file.size)),
      el("td", { className: "mono small", title: file.sha256 ?? "" }, (file.sha256 ?? "").slice(0, 12)))))));
}

function formatSize(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  return unit ? `${size.toFixed(1)} ${units[unit]}` : `${size} B`;
}

function onStatus(update) {
  run.status = update.status;
  if (update.error) run.error = update.error;
  if (TERMINAL.has(update.status)) {
    closeStream("ended");
    run.ended_at ??= Date.now() / 1000;
    refreshDetails(); // the end time and error as recorded
  }
  renderSummary();
}

async function refreshDetails() {
  try {
    const details = await api(base);
    if (readingRecord()) return; // a full read is under way
    run = { ...details, status: TERMINAL.has(run.status) ? run.status : details.status };
    renderDetails();
  } catch (error) {
    showError(error);
  }
}

// ---- output --------------------------------------------------------------------------

let outputLoading = false;
let heldOutput = [];

function appendOutput(pairs) {
  const out = $("output");
  const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 30;
  for (const [stream, line] of pairs) {
    out.append(el("span", { className: stream === "stderr" ? "line stderr" : "line" }, line));
  }
  while (out.childElementCount > OUTPUT_KEEP) out.firstElementChild.remove();
  out.dataset.lines = String(out.childElementCount);
  if (atBottom) out.scrollTop = out.scrollHeight;
}

function onOutput(update) {
  if (outputLoading) heldOutput.push(update);
  else appendOutput(update.lines.map((line) => [update.stream, line]));
}

/** Read the output tail; lines that come meanwhile are added if they are newer than it. */
async function loadOutput() {
  outputLoading = true;
  heldOutput = [];
  try {
    const { lines } = await api(`${base}/output?limit=200`);
    $("output").replaceChildren();
    appendOutput(lines.map((line) => [line.stream, line.line]));
    const newest = Math.max(0, ...lines.map((line) => line.time ?? 0));
    for (const update of heldOutput) {
      if (!(update.timestamp <= newest)) appendOutput(update.lines.map((line) => [update.stream, line]));
    }
  } finally {
    outputLoading = false;
    heldOutput = [];
  }
}

// ---- the stream's updates ----------------------------------------------------------

/** Show a read of the details (on load and on a resync, from run_stream.js). */
function showDetails(details) {
  run = details;
  renderDetails();
}

/** An update of the details or the output (the stream hands in all but the metrics'). */
function onUpdate(update) {
  switch (update.type) {
    case "status":
      onStatus(update);
      break;
    case "tag":
      Object.assign(run.tags, update.tags);
      renderTags();
      break;
    case "property":
      Object.assign(run.properties, update.properties);
      renderProperties();
      break;
    case "file":
      run.files = [...(run.files ?? []).filter((file) => file.name !== update.name),
        { name: update.name, size: update.size, sha256: update.sha256 }];
      renderFiles();
      break;
    case "log_line":
      onOutput(update);
      break;
    default:
      break; // run_started and types this page does not show
  }
}

async function main() {
  header();
  if (!runId) throw new Error("no run id in the address");
  await followRun({ details: showDetails, update: onUpdate, loadOutput });
  document.body.dataset.ready = "true";
  setInterval(() => {
    if (run && !TERMINAL.has(run.status) && $("duration")) $("duration").textContent = formatDuration(runDuration(run));
  }, 1000);
}

main().catch(showError);
