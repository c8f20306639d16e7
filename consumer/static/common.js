// Shared helpers of the runstream pages: the API client, DOM building, formatting.
//
// Every string that comes from a run (metric names, tags, properties, file names,
// output lines) reaches the page through textContent / createTextNode (el() below)
// or through plotlyText() for Plotly: never through innerHTML.

const query = new URLSearchParams(location.search);

/** The bearer token the page was opened with (`?token=T`), or null. */
export const token = query.get("token");

export const TERMINAL = new Set(["Completed", "Failed", "Canceled"]);
const STATUSES = new Set([
  "NotStarted", "Queued", "Starting", "Running", "NotResponding", "Finalizing", "Completed", "Failed", "Canceled",
]);
/** What a status badge says on hover, where its name alone may puzzle. */
const STATUS_HINTS = {
  NotResponding: "no heartbeat for a while: the process may be paused or busy; Running again when it is heard from",
};

/** An API error: the HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(`${status}: ${message}`);
    this.status = status;
  }
}

/** A JSON document of the API (with the bearer token when the page has one): GET, or the
 * `method` of a request that changes something (POST, DELETE), whose JSON reply it is. */
export async function api(path, method = "GET") {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers });
  if (!response.ok) {
    let message = response.statusText;
    try {
      const body = await response.json();
      const error = body.error ?? body.message;
      message = typeof error === "string" ? error : error?.message ?? message;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, message);
  }
  return response.json();
}

/** `url` with `token=T` added when the page has a token (links, <img>, EventSource). */
export function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

/** A path segment: any unicode, "/" included, encoded. */
export const seg = (text) => encodeURIComponent(text);

/** A file name as a path: each "/"-separated part encoded, the slashes kept. */
export const filePath = (name) => name.split("/").map(encodeURIComponent).join("/");

export const runApi = (runId) => `/api/v1/runs/${seg(runId)}`;
export const runPage = (runId) => withToken(`/runs/${seg(runId)}`);
export const experimentPage = (name) => withToken(`/experiments/${seg(name)}`);
export const fileUrl = (runId, name) => withToken(`${runApi(runId)}/files/${filePath(name)}`);

/** The last path segment after `prefix`, decoded (`/runs/<id>` -> id). */
export function pathParam(prefix) {
  const rest = location.pathname.startsWith(prefix) ? location.pathname.slice(prefix.length) : "";
  return decodeURIComponent(rest.replace(/\/+$/, ""));
}

/**
 * Build an element. `attrs` are set as properties (className, href, title, ...), except
 * `dataset` (an object) and keys with a "-" (set as attributes). Children: nodes, or
 * anything else as text.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.includes("-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  append(node, ...children);
  return node;
}

/** Append nodes or text (never parsed as HTML); arrays are flattened, null skipped. */
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Empty a node and fill it again. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

/** The number a value is plotted as: non-finite floats ("NaN", "Infinity") and text are gaps. */
export function plotNumber(value) {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}

/** Whether a value can be drawn on a numeric axis (non-finite floats count: they are gaps). */
export function isNumeric(value) {
  return typeof value === "number" || typeof value === "boolean" ||
    value === "NaN" || value === "Infinity" || value === "-Infinity";
}

/** A value as text: numbers to 6 significant digits, the rest as they are. */
export function formatValue(value) {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return String(Number(value.toPrecision(6)));
  }
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Text for Plotly's own markup (it reads <b>, <br>, <a>, entities): shown literally. */
export function plotlyText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleString();
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h) return `${h}h ${m}m ${rest}s`;
  if (m) return `${m}m ${rest}s`;
  return `${rest}s`;
}

/** Duration of a run: to its end, or to now while it runs. */
export function runDuration(run) {
  const start = run.started_at ?? run.created_at;
  if (start === null || start === undefined) return null;
  const end = run.ended_at ?? (TERMINAL.has(run.status) ? null : Date.now() / 1000);
  return end === null ? null : end - start;
}

/** A status badge (its class names a known status only). */
export function statusBadge(status) {
  const badge = el("span", { className: "badge" });
  setStatus(badge, status);
  return badge;
}

export function setStatus(badge, status) {
  const known = STATUSES.has(status) ? status : "Unknown";
  badge.className = `badge status-${known}`;
  badge.dataset.status = status ?? "";
  badge.textContent = status ?? "unknown";
  badge.title = STATUS_HINTS[known] ?? "";
}

/** Tags as chips: `key` or `key: value`. */
export function tagChips(tags) {
  return Object.entries(tags ?? {}).map(([key, value]) =>
    el("span", { className: "chip" }, value === "" || value === null ? key : `${key}: ${value}`));
}

/** A table of key/value rows. */
export function keyValueTable(entries) {
  return el("table", { className: "kv" },
    el("tbody", {}, entries.map(([key, value]) =>
      el("tr", {}, el("th", {}, key), el("td", {}, value instanceof Node ? value : formatValue(value))))));
}

/** The site header: home link, then a trail of (text, href) crumbs. */
export function header(...crumbs) {
  const nav = el("nav", { className: "crumbs" }, el("a", { href: withToken("/"), className: "brand" }, "runstream"));
  for (const [text, href] of crumbs) {
    append(nav, el("span", { className: "sep" }, "/"), href ? el("a", { href }, text) : el("span", {}, text));
  }
  document.getElementById("header").replaceChildren(nav);
}

/** Show an error in the page's error box. */
export function showError(error) {
  const box = document.getElementById("error");
  box.hidden = false;
  append(box, el("div", {}, error instanceof Error ? error.message : String(error)));
  console.error(error);
}

/** Plotly's layout and config for the pages' line charts. */
export const chartLayout = (extra = {}) => ({
  margin: { l: 50, r: 10, t: 10, b: 35 },
  height: 260,
  showlegend: false,
  hovermode: "closest",
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "#fff",
  xaxis: { automargin: true, gridcolor: "#eee" },
  yaxis: { automargin: true, gridcolor: "#eee" },
  ...extra,
});
export const chartConfig = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["sendDataToCloud"] };

/** The x and y of a metric response (series or list) as plottable arrays. */
export function seriesXY(metric) {
  return { x: metric.steps.slice(), y: metric.values.map(plotNumber) };
}
