// The experiments list: each experiment with its number of runs, linked to its page.
import { api, el, experimentPage, header, showError } from "./common.js";

async function main() {
  header();
  const { experiments } = await api("/api/v1/experiments");
  const body = document.querySelector("#experiments tbody");
  body.replaceChildren(...experiments.map((experiment) =>
    el("tr", {},
      el("td", {}, el("a", { href: experimentPage(experiment.name) }, experiment.name)),
      el("td", { className: "num" }, String(experiment.runs)))));
  document.getElementById("empty").hidden = experiments.length > 0;
  document.body.dataset.ready = "true";
}

main().catch(showError);
