// The run page: status, properties, tags, metrics as live charts, tables, images, files
// and the output tail, kept current by the run's SSE stream without reloading.
//
// How the record and the stream meet without gaps or doubles: the details carry the
// live-stream id they were read at (`live_id`) and each metric's count of points (rows,
// images). The stream is followed from that id, so it brings exactly what came after
// the counts. Per metric the page keeps the count the stream has brought it to
// (`slot.stream`) and the count its view holds (`view.count`, from the metric's own
// read): an update whose points the view holds already is skipped, the rest is drawn.
// Updates that come while a metric is being read wait for the read. A "resync" (the
// stream was trimmed past this page) reads everything again.
import {
  TERMINAL, api, chartConfig, chartLayout, el, experimentPage, fileUrl, formatDuration, formatTime, formatValue,
  header, isNumeric, keyValueTable, pathParam, plotNumber, plotlyText, replace, runApi, runDuration, runPage, seg,
  setStatus, showError, tagChips, withToken,
} from "./common.js";

const runId = pathParam("/runs/");
const base = runApi(runId);
/** Points a chart is first read with (the server downsamples longer series). */
const MAX_POINTS = 2000;
/** Points drawn live before a chart is read again, downsampled. */
const RELOAD_ABOVE = 20000;
/** Output lines kept on the page; rows shown of a table; images shown of a metric. */
const OUTPUT_KEEP = 2000;
const ROWS_SHOWN = 500;
const IMAGES_SHOWN = 24;
const METRIC_TYPES = new Set(["metric", "list", "row", "table", "image"]);

const $ = (id) => document.getElementById(id);

/** The page's copy of the run's details (status, tags, properties, files, ...). */
let run = null;
/** Metric name -> slot: {name, view, stream, loading, ticket, held: [[update, stream count after it]]}. */
const slots = new Map();
/** Updates that came while the details were being read (null when not reading). */
let holding = null;
let source = null;
let loadTicket = 0;

// ---- metrics -------------------------------------------------------------------------

function slotOf(name) {
  let slot = slots.get(name);
  if (!slot) {
    slot = { name, view: null, stream: 0, loading: false, ticket: 0, held: [] };
    slots.set(name, slot);
  }
  return slot;
}

/** Points (values, rows, images) an update adds to its metric. */
function sizeOf(update) {
  switch (update.type) {
    case "metric":
    case "list":
      return update.values.length;
    case "table":
      return Math.max(0, ...Object.values(update.columns).map((column) => column.length));
    default:
      return 1; // row, image
  }
}

/** The update with only its last `n` points. */
function lastOf(update, n) {
  switch (update.type) {
    case "metric":
      return { ...update, steps: update.steps.slice(-n), values: update.values.slice(-n) };
    case "list":
      return { ...update, values: update.values.slice(-n) };
    case "table":
      return { ...update, columns: Object.fromEntries(Object.entries(update.columns).map(([k, v]) => [k, v.slice(-n)])) };
    default:
      return update;
  }
}

/** Read a metric and show it; updates that come meanwhile wait in `slot.held`. */
async function loadMetric(slot) {
  const ticket = ++slot.ticket;
  slot.loading = true;
  let data;
  try {
    data = await api(`${base}/metrics/${seg(slot.name)}?max_points=${MAX_POINTS}`);
  } catch (error) {
    if (ticket === slot.ticket) {
      slot.loading = false;
      slot.held = [];
    }
    showError(error);
    return;
  }
  if (ticket !== slot.ticket) return; // a newer read took over
  slot.loading = false;
  show(slot, data);
  const held = slot.held;
  slot.held = [];
  for (const [update, at] of held) onMetric(update, at);
}

/** Build (or rebuild in place) the view of a metric from its API response. */
function show(slot, data) {
  const old = slot.view;
  const view = makeView(slot.name, data, old);
  if (old && old !== view) old.remove();
  slot.view = view;
  $("no-metrics").hidden = true;
}

function makeView(name, data, old) {
  switch (data.kind) {
    case "series":
    case "list": {
      const values = data.values ?? [];
      const numeric = values.every(isNumeric);
      if (!numeric || (data.kind === "series" && data.count === 1)) {
        return scalarView(name, values.at(-1), data.count, !numeric, old);
      }
      // a list's points are numbered (its steps, when mixed with log(), may repeat); a thinned one keeps its steps
      const x = data.kind === "list" && !data.downsampled ? values.map((_, i) => i) : data.steps;
      return lineView(name, data.kind, x, values.map(plotNumber), old, {
        downsampled: data.downsampled, count: data.count,
      });
    }
    case "table":
      return tableOrChart(name, data.columns ?? {}, old);
    case "image":
      return imageView(name, data.files ?? [], old);
    default:
      return scalarView(name, `(${data.kind})`, 0, true, old);
  }
}

function tableOrChart(name, columns, old) {
  const names = Object.keys(columns);
  if (names.length === 1 && columns[names[0]].every(isNumeric)) {
    const y = columns[names[0]];
    return lineView(name, "table", y.map((_, i) => i), y.map(plotNumber), old, { columns: names });
  }
  if (names.length === 2 && columns[names[1]].every(isNumeric)) {
    const x = columns[names[0]];
    return lineView(name, "table", x.map(xValue), columns[names[1]].map(plotNumber), old, { columns: names });
  }
  return tableView(name, names, columns, old);
}

const xValue = (value) => (isNumeric(value) ? plotNumber(value) : String(value));

const byName = (a, b) => a.localeCompare(b, undefined, { sensitivity: "base", numeric: true }) || (a < b ? -1 : a > b ? 1 : 0);

/** Insert a metric's node among its siblings in name order (the order does not depend on which read ends first). */
function place(container, node) {
  const name = node.dataset.metric;
  const next = [...container.children].find((child) => byName(child.dataset.metric ?? "", name) > 0);
  container.insertBefore(node, next ?? null);
}

function card(name, kind, ...body) {
  return el("div", { className: `card ${kind}`, dataset: { metric: name } },
    el("h3", { title: name }, name), ...body);
}

function lineView(name, kind, x, y, old, { columns = null, downsampled = false, count = x.length } = {}) {
  const axes = chartLayout();
  const xTitle = columns ? (columns.length === 2 ? columns[0] : "row") : "step";
  const layout = chartLayout({
    uirevision: "keep",
    xaxis: { ...axes.xaxis, title: { text: plotlyText(xTitle) } },
    yaxis: { ...axes.yaxis, title: { text: columns ? plotlyText(columns.at(-1)) : "" } },
  });
  const trace = {
    x, y, type: "scatter", mode: x.length > 50 ? "lines" : "lines+markers",
    line: { width: 1.5, color: "#2563eb" }, marker: { size: 4 },
    hovertemplate: "%{x}: %{y}<extra></extra>",
  };
  let view = old?.type === "line" ? old : null;
  if (view) {
    Plotly.react(view.plot, [trace], layout, chartConfig);
  } else {
    const plot = el("div", { className: "plot" });
    const note = el("div", { className: "note muted small" });
    const node = card(name, "chart", note, plot);
    place($("charts"), node);
    view = { type: "line", node, plot, note, remove: () => { Plotly.purge(plot); node.remove(); } };
    Plotly.newPlot(plot, [trace], layout, chartConfig);
  }
  Object.assign(view, {
    kind, columns, count, points: x.length, lastStep: maxStep(x), pending: { x: [], y: [] },
    downsampled,
  });
  noteLine(view);
  return view;
}

function noteLine(view) {
  view.note.textContent = view.downsampled ? `${view.count} points, ${view.points} drawn` : "";
  view.node.dataset.points = String(view.points);
  view.node.dataset.count = String(view.count);
}

function maxStep(steps) {
  let best = -1;
  for (const step of steps) if (typeof step === "number" && step > best) best = step;
  return best;
}

function scalarView(name, value, count, text, old) {
  let view = old?.type === "scalar" ? old : null;
  if (!view) {
    const valueCell = el("td", { className: "value" });
    const countCell = el("td", { className: "muted small" });
    const node = el("tr", { dataset: { metric: name } }, el("th", {}, name), valueCell, countCell);
    let body = document.querySelector("#scalars tbody");
    if (!body) {
      body = el("tbody");
      $("scalars").append(el("table", { className: "kv scalars" }, body));
    }
    place(body, node);
    view = { type: "scalar", node, valueCell, countCell, remove: () => node.remove() };
  }
  Object.assign(view, { text, count });
  setScalar(view, value);
  return view;
}

function setScalar(view, value) {
  view.valueCell.textContent = formatValue(value);
  view.countCell.textContent = view.count > 1 ? `last of ${view.count}` : "";
  view.node.dataset.count = String(view.count);
}

function tableView(name, names, columns, old) {
  if (old?.type === "table") old.remove();
  const body = el("tbody");
  const note = el("div", { className: "note muted small" });
  const table = el("table", { className: "list data" },
    el("thead", {}, el("tr", {}, names.map((column) => el("th", {}, column)))), body);
  const node = card(name, "table-card", note, el("div", { className: "scroll" }, table));
  place($("tables"), node);
  $("tables-section").hidden = false;
  const view = { type: "table", node, body, note, names, count: 0, remove: () => node.remove() };
  appendRows(view, columns);
  return view;
}

function appendRows(view, columns) {
  const length = Math.max(0, ...view.names.map((column) => columns[column]?.length ?? 0));
  for (let i = Math.max(0, length - ROWS_SHOWN); i < length; i++) {
    view.body.append(el("tr", {}, view.names.map((column) => el("td", {}, formatValue(columns[column]?.[i])))));
  }
  view.count += length;
  while (view.body.rows.length > ROWS_SHOWN) view.body.deleteRow(0);
  view.note.textContent = view.count > ROWS_SHOWN ? `${view.count} rows, the last ${ROWS_SHOWN} shown` : `${view.count} rows`;
  view.node.dataset.count = String(view.count);
}

function imageView(name, files, old) {
  let view = old?.type === "image" ? old : null;
  if (!view) {
    const gallery = el("div", { className: "gallery" });
    const node = card(name, "image-card", gallery);
    place($("images"), node);
    $("images-section").hidden = false;
    view = { type: "image", node, gallery, files: new Set(), count: 0, remove: () => node.remove() };
  }
  files.forEach((file) => addImage(view, file));
  return view;
}

function addImage(view, file) {
  if (view.files.has(file)) return;
  view.files.add(file);
  view.count = view.files.size;
  const href = fileUrl(runId, file);
  view.gallery.append(el("figure", {},
    el("a", { href, target: "_blank", rel: "noopener" }, el("img", { src: href, alt: file, loading: "lazy" })),
    el("figcaption", {}, file)));
  while (view.gallery.children.length > IMAGES_SHOWN) view.gallery.firstElementChild.remove();
}

/**
 * A metric update (metric, list, row, table, image). `at`: the stream count after it,
 * when it was counted before (it waited for a read).
 */
function onMetric(update, at = null) {
  const slot = slotOf(update.name);
  if (at === null) {
    slot.stream += sizeOf(update);
    at = slot.stream;
  }
  if (slot.loading) {
    slot.held.push([update, at]);
    return;
  }
  const view = slot.view;
  if (!view) {
    slot.held.push([update, at]);
    loadMetric(slot);
    return;
  }
  const fresh = at - view.count; // points of this update the view lacks
  if (fresh <= 0) return;
  if (!applyMetric(view, fresh < sizeOf(update) ? lastOf(update, fresh) : update)) {
    slot.held.push([update, at]); // the view cannot take it (a scalar became a series...): read again
    loadMetric(slot);
  }
}

/** Add an update's points to a view; false when the view must be read again. */
function applyMetric(view, update) {
  const add = (x, value) => queuePoint(view, x, plotNumber(value));
  switch (`${view.type} ${update.type}`) {
    case "line metric":
    case "line list": {
      if (view.columns || !update.values.every(isNumeric)) return false;
      const steps = update.type === "metric" && view.kind === "series"
        ? update.steps : update.values.map((_, i) => view.lastStep + 1 + i); // a list numbers its points
      update.values.forEach((value, i) => add(steps[i], value));
      return true;
    }
    case "line row":
    case "line table": {
      const columns = update.type === "row" ? columnsOf(update.row) : update.columns;
      if (!view.columns || !sameNames(view.columns, Object.keys(columns))) return false;
      const [first, second] = view.columns;
      const ys = columns[second ?? first];
      if (!ys.every(isNumeric)) return false;
      ys.forEach((value, i) => add(second === undefined ? view.lastStep + 1 : xValue(columns[first][i]), value));
      return true;
    }
    case "scalar metric":
    case "scalar list":
      if (!view.text && update.values.every(isNumeric)) return false; // a second point: a chart now
      view.count += update.values.length;
      setScalar(view, update.values.at(-1));
      return true;
    case "table row":
    case "table table": {
      const columns = update.type === "row" ? columnsOf(update.row) : update.columns;
      if (!sameNames(view.names, Object.keys(columns))) return false;
      appendRows(view, columns);
      return true;
    }
    case "image image":
      addImage(view, update.file);
      return true;
    default:
      return false;
  }
}

const columnsOf = (row) => Object.fromEntries(Object.entries(row).map(([key, value]) => [key, [value]]));
const sameNames = (a, b) => a.length === b.length && a.every((name) => b.includes(name));

const dirtyViews = new Set();
let flushTimer = null;

function queuePoint(view, x, y) {
  view.pending.x.push(x);
  view.pending.y.push(y);
  view.count += 1;
  if (typeof x === "number" && x > view.lastStep) view.lastStep = x;
  dirtyViews.add(view);
  flushTimer ??= setTimeout(flushPoints, 100);
}

/** Draw the points queued since the last flush: one extendTraces per chart. */
function flushPoints() {
  flushTimer = null;
  for (const view of dirtyViews) {
    const { x, y } = view.pending;
    if (!x.length || !view.node.isConnected) continue;
    view.pending = { x: [], y: [] };
    Plotly.extendTraces(view.plot, { x: [x], y: [y] }, [0]);
    view.points += x.length;
    noteLine(view);
    if (view.points > 50 && view.plot.data[0].mode !== "lines") Plotly.restyle(view.plot, { mode: "lines" });
    const slot = slots.get(view.node.dataset.metric);
    if (view.points > RELOAD_ABOVE && slot && !slot.loading) loadMetric(slot); // downsampled again
  }
  dirtyViews.clear();
}

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
    if (holding) return; // a full read is under way
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

// ---- the event stream ----------------------------------------------------------------

function dispatch(update) {
  if (holding && update.type !== "resync") {
    holding.push(update);
    return;
  }
  if (METRIC_TYPES.has(update.type)) {
    onMetric(update);
    return;
  }
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
    case "resync":
      loadAll().catch(showError);
      break;
    default:
      break; // run_started and types this page does not show
  }
}

function openStream(after) {
  const from = after && after !== "0-0" ? `?from=${encodeURIComponent(after)}` : "?from=0-0";
  source = new EventSource(withToken(`${base}/events${from}`));
  setLive("connecting", "connecting…");
  source.onopen = () => setLive("live", "live");
  source.onerror = () => {
    if (source?.readyState === EventSource.CLOSED) setLive("off", "disconnected");
    else if (source) setLive("connecting", "reconnecting…");
  };
  source.addEventListener("end", () => closeStream("ended"));
  source.onmessage = (message) => {
    let update;
    try {
      update = JSON.parse(message.data);
    } catch {
      return;
    }
    try {
      dispatch(update);
    } catch (error) {
      showError(error);
    }
  };
}

function closeStream(state) {
  if (source) source.close();
  source = null;
  setLive("off", state);
}

function setLive(state, text) {
  const live = $("live");
  live.dataset.state = state;
  live.className = `live ${state}`;
  live.textContent = text;
}

const idParts = (id) => String(id).split("-").map(Number);
function after(id, than) {
  const [a, b] = idParts(id);
  const [c, d] = idParts(than);
  return a > c || (a === c && (b || 0) > (d || 0));
}

/**
 * Read the whole record (on load and on a resync): the details, then every metric and
 * the output. `started(details)` runs as soon as the details are in.
 */
async function loadAll(started = () => {}) {
  const ticket = ++loadTicket;
  holding ??= [];
  let details;
  try {
    details = await api(base);
  } catch (error) {
    if (ticket === loadTicket) holding = null;
    throw error;
  }
  if (ticket !== loadTicket) return;
  const held = holding;
  holding = null;
  run = details;
  renderDetails();
  const metrics = Object.entries(run.metrics ?? {});
  $("no-metrics").hidden = metrics.length > 0 || slots.size > 0;
  const reads = metrics.map(([name, info]) => {
    const slot = slotOf(name);
    slot.stream = info.count; // the stream goes on from the details' live_id
    slot.held = [];
    return loadMetric(slot);
  });
  started(details);
  for (const update of held) {
    if (!update.id || after(update.id, details.live_id)) dispatch(update); // older ones are in the record
  }
  await Promise.all([...reads, loadOutput()]);
}

async function main() {
  header();
  if (!runId) throw new Error("no run id in the address");
  await loadAll((details) => {
    if (TERMINAL.has(details.status)) setLive("off", "");
    else openStream(details.live_id); // the stream brings what the record read lacks
  });
  document.body.dataset.ready = "true";
  setInterval(() => {
    if (run && !TERMINAL.has(run.status) && $("duration")) $("duration").textContent = formatDuration(runDuration(run));
  }, 1000);
}

main().catch(showError);
