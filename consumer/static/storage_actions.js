// Actions that move or remove runs: archive, restore and delete a run (on its page), archive
// an experiment's ended runs and delete the experiment (on the experiment's page). Each goes
// through the REST API with the page's token (the server refuses them without one when it
// has tokens); a delete asks on the page first (no browser dialog), then leaves for the page
// above, since what was shown is gone.
import { TERMINAL, api, el, experimentPage, formatTime, replace, runApi, showError, withToken } from "./common.js";

/** A button that sends `method` to `path` and hands the reply to `done` (disabled meanwhile). */
function action(name, label, method, path, done) {
  const button = el("button", { type: "button", dataset: { action: name } }, label);
  button.onclick = async () => {
    button.disabled = true;
    try {
      done(await api(path, method));
    } catch (error) {
      showError(error);
      button.disabled = false;
    }
  };
  return button;
}

/** "Delete…", which shows `question` with the button that deletes (`remove`) and "Cancel". */
function askFirst(question, remove) {
  const ask = el("button", { type: "button", className: "danger", dataset: { action: "delete-ask" } }, "Delete…");
  const cancel = el("button", { type: "button", className: "secondary", dataset: { action: "delete-cancel" } }, "Cancel");
  const confirm = el("span", { className: "confirm", hidden: true }, question, " ", remove, cancel);
  ask.onclick = () => { ask.hidden = true; confirm.hidden = false; };
  cancel.onclick = () => { confirm.hidden = true; ask.hidden = false; };
  return [ask, confirm];
}

/** Show in `node` the actions `run` allows: none while it runs (cancel it first). */
export async function renderRunActions(node, run) {
  if (!TERMINAL.has(run.status)) {
    node.hidden = true;
    return;
  }
  const base = runApi(run.id);
  let storage;
  try {
    storage = await api(`${base}/storage`);
  } catch (error) {
    showError(error);
    return;
  }
  const again = () => renderRunActions(node, run);
  const move = storage.archived
    ? action("restore", "Restore to Redis", "POST", `${base}/restore`, again)
    : action("archive", "Archive", "POST", `${base}/archive`, again);
  const remove = action("delete", "Delete", "DELETE", base, () => { location.href = experimentPage(run.experiment); });
  const where = storage.archived
    ? el("span", { className: "muted", dataset: { storage: "archive" } }, `in the archive since ${formatTime(storage.archived_at)}`)
    : el("span", { className: "muted", dataset: { storage: "redis" } }, "in Redis");
  replace(node, move, askFirst("Delete this run, its child runs and their files for good?", remove), where);
  node.hidden = false;
}

/** Show in `node` the experiment's actions; `changed` is called after an archive (to reload its runs). */
export function renderExperimentActions(node, experiment, changed) {
  const base = `/api/v1/experiments/${encodeURIComponent(experiment)}`;
  const said = el("span", { className: "muted", dataset: { said: "" } });
  const archive = action("archive", "Archive ended runs", "POST", `${base}/archive`, (reply) => {
    said.textContent = `${reply.archived.length} runs archived`;
    archive.disabled = false;
    changed();
  });
  const remove = action("delete", "Delete", "DELETE", base, () => { location.href = withToken("/"); });
  replace(node, archive, askFirst("Delete this experiment and all its runs for good? (Running runs: cancel them first.)", remove), said);
  node.hidden = false;
}
