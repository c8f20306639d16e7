// The run page's metrics: one view per metric (a Plotly chart, a row of the scalars
// table, a table, an image gallery), read from the API and extended by the live stream.
//
// Per metric the page keeps the count the stream has brought it to (`slot.stream`) and
// the count its view holds (`view.count`, from the metric's own read): an update whose
// points the view holds already is skipped, the rest is drawn. Updates that come while
// a metric is being read wait for the read. Live points are queued and drawn together
// (one extendTraces per chart); a chart that grows past RELOAD_ABOVE points is read
// again, downsampled by the server. The stream (run_stream.js) hands the metric
// updates to onMetric().
import {
  api, chartConfig, chartLayout, el, fileUrl, formatValue, isNumeric, pathParam, plotNumber, plotlyText, runApi, seg,
  showError,
} from "./common.js";

const runId = pathParam("/runs/");
const base = runApi(runId);
/** Points a chart is first read with (the server downsamples longer series). */
const MAX_POINTS = 2000;
/** Points drawn live before a chart is read again, downsampled. */
const RELOAD_ABOVE = 20000;
/** Rows shown of a table; images shown of a metric. */
const ROWS_SHOWN = 500;
const IMAGES_SHOWN = 24;
/** The update types that belong to a metric (onMetric takes them). */
export const METRIC_TYPES = new Set(["metric", "list", "row", "table", "image"]);

const $ = (id) => document.getElementById(id);

/** Metric name -> slot: {name, view, stream, loading, ticket, held: [[update, stream count after it]]}. */
const slots = new Map();

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
export function onMetric(update, at = null) {
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

/** Read every metric of the details afresh (on load and on a resync); the reads, to wait for. */
export function loadMetrics(metrics) {
  const entries = Object.entries(metrics ?? {});
  $("no-metrics").hidden = entries.length > 0 || slots.size > 0;
  return entries.map(([name, info]) => {
    const slot = slotOf(name);
    slot.stream = info.count; // the stream goes on from the details' live_id
    slot.held = [];
    return loadMetric(slot);
  });
}
