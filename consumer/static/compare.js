// Compare runs (`/compare?runs=ID1,ID2,...`): one chart per metric, one trace per run.
import {
  api, chartConfig, chartLayout, el, experimentPage, formatDuration, header, isNumeric, plotNumber, plotlyText,
  runApi, runDuration, runPage, seg, showError, statusBadge, tagChips,
} from "./common.js";

const MAX_POINTS = 2000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];

const ids = (new URLSearchParams(location.search).get("runs") ?? "")
  .split(",").map((id) => id.trim()).filter(Boolean);

/** The (x, y, axis titles) a metric is drawn with, or null for what is not a line. */
function line(metric) {
  if (metric.kind === "series" || metric.kind === "list") {
    if (!metric.values.every(isNumeric) || (metric.kind === "series" && metric.count === 1)) return null;
    const x = metric.kind === "list" && !metric.downsampled ? metric.values.map((_, i) => i) : metric.steps;
    return { x, y: metric.values.map(plotNumber), xTitle: "step", yTitle: "" };
  }
  if (metric.kind === "table") {
    const names = Object.keys(metric.columns);
    if (names.length === 1 && metric.columns[names[0]].every(isNumeric)) {
      const y = metric.columns[names[0]];
      return { x: y.map((_, i) => i), y: y.map(plotNumber), xTitle: "row", yTitle: names[0] };
    }
    if (names.length === 2 && metric.columns[names[1]].every(isNumeric)) {
      const x = metric.columns[names[0]].map((v) => (isNumeric(v) ? plotNumber(v) : String(v)));
      return { x, y: metric.columns[names[1]].map(plotNumber), xTitle: names[0], yTitle: names[1] };
    }
  }
  return null;
}

async function main() {
  header(["compare", null]);
  if (ids.length === 0) throw new Error("no runs to compare: open /compare?runs=ID1,ID2");
  const runs = await Promise.all(ids.map((id) => api(runApi(id))));
  const color = new Map(runs.map((run, i) => [run.id, COLORS[i % COLORS.length]]));
  const label = (run) => run.display_name || run.id;

  document.querySelector("#runs tbody").replaceChildren(...runs.map((run) => el("tr", {},
    el("td", {}, el("span", { className: "swatch", style: `background:${color.get(run.id)}` })),
    el("td", {}, el("a", { href: runPage(run.id) }, label(run))),
    el("td", {}, el("a", { href: experimentPage(run.experiment) }, run.experiment)),
    el("td", {}, statusBadge(run.status)),
    el("td", { className: "num" }, formatDuration(runDuration(run))),
    el("td", {}, el("div", { className: "chips" }, tagChips(run.tags))))));

  // every metric name that some run can draw as a line, in first-seen order
  const names = [];
  for (const run of runs) {
    for (const [name, info] of Object.entries(run.metrics ?? {})) {
      if (info.kind !== "image" && !names.includes(name)) names.push(name);
    }
  }
  names.sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base", numeric: true }));
  const charts = document.getElementById("charts");
  let drawn = 0;
  for (const name of names) {
    const holders = runs.filter((run) => run.metrics?.[name] && run.metrics[name].kind !== "image");
    const metrics = await Promise.all(holders.map((run) =>
      api(`${runApi(run.id)}/metrics/${seg(name)}?max_points=${MAX_POINTS}`).catch(() => null)));
    const traces = [];
    let titles = null;
    holders.forEach((run, i) => {
      const drawable = metrics[i] && line(metrics[i]);
      if (!drawable) return;
      titles ??= drawable;
      traces.push({
        x: drawable.x, y: drawable.y, type: "scatter", mode: drawable.x.length > 50 ? "lines" : "lines+markers",
        name: plotlyText(label(run)), line: { width: 1.5, color: color.get(run.id) }, marker: { size: 4 },
        hovertemplate: "%{x}: %{y}<extra>%{fullData.name}</extra>",
      });
    });
    if (!traces.length) continue;
    const plot = el("div", { className: "plot" });
    charts.append(el("div", { className: "card chart", dataset: { metric: name, traces: String(traces.length) } },
      el("h3", { title: name }, name), plot));
    Plotly.newPlot(plot, traces, chartLayout({
      showlegend: true,
      legend: { orientation: "h", y: -0.25 },
      height: 300,
      xaxis: { ...chartLayout().xaxis, title: { text: plotlyText(titles.xTitle) } },
      yaxis: { ...chartLayout().yaxis, title: { text: plotlyText(titles.yTitle) } },
    }), chartConfig);
    drawn++;
  }
  document.getElementById("no-metrics").hidden = drawn > 0;
  document.body.dataset.ready = "true";
}

main().catch(showError);
