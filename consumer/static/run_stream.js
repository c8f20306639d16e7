// The run page's live stream: the run's record read, and its SSE stream followed from
// where that read left off, each update handed to the part of the page it changes.
//
// How the record and the stream meet without gaps or doubles: the details carry the
// live-stream id they were read at (`live_id`) and each metric's count of points (rows,
// images). The stream is followed from that id, so it brings exactly what came after
// the counts (run_metrics.js skips, per metric, what its view holds already). Updates
// that come while the details are being read wait for them, and those the details
// already hold are dropped. A "resync" (the stream was trimmed past this page) reads
// everything again. The page (run.js) hands in what to do with the details, their
// updates and the output (followRun).
import { TERMINAL, api, pathParam, runApi, showError, withToken } from "./common.js";
import { METRIC_TYPES, loadMetrics, onMetric } from "./run_metrics.js";

const base = runApi(pathParam("/runs/"));

const $ = (id) => document.getElementById(id);

/**
 * What the page does with the record and the stream (from followRun): `details(details)`
 * shows a read of the details, `update(update)` one of theirs or an output update,
 * `loadOutput()` reads the output tail.
 */
let page = null;
/** Updates that came while the details were being read (null when not reading). */
let holding = null;
let source = null;
let loadTicket = 0;

/** Whether the whole record is being read (a read of the details alone would be stale). */
export const readingRecord = () => holding !== null;

function dispatch(update) {
  if (holding && update.type !== "resync") {
    holding.push(update);
    return;
  }
  if (METRIC_TYPES.has(update.type)) {
    onMetric(update);
    return;
  }
  if (update.type === "resync") loadAll().catch(showError);
  else page.update(update); // status, tag, property, file, log_line; it skips the rest
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

export function closeStream(state) {
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
  page.details(details);
  const reads = loadMetrics(details.metrics);
  started(details);
  for (const update of held) {
    if (!update.id || after(update.id, details.live_id)) dispatch(update); // older ones are in the record
  }
  await Promise.all([...reads, page.loadOutput()]);
}

/** Read the run's record and follow its stream from there, unless the run has ended. */
export async function followRun(handlers) {
  page = handlers;
  await loadAll((details) => {
    if (TERMINAL.has(details.status)) setLive("off", "");
    else openStream(details.live_id); // the stream brings what the record read lacks
  });
}
