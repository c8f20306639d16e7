"""Runs read back as Azure ML v1's SDK reads them: from their records, top-level by default, as a generator.

A script ported from azureml-core notices when ``Run(experiment, run_id)``, ``exp.get_runs()``
or ``run.get_children()`` hand back placeholders (every run "Running", named by its id,
without its parent), when ``get_runs`` lists child runs among the top-level ones, or when
``next(exp.get_runs())`` fails on a list.  Against real Redis and a real collector.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from runstream import Experiment, Run
from runstream.errors import RunNotFoundError
from tests.conftest import CollectorThread, wait_until


@pytest.fixture
def family(experiment: Experiment, start_collector: Callable[..., CollectorThread]) -> tuple[Run, Run, Run]:
    """A parent that Completed with one child that Failed, and a later run that Canceled."""
    start_collector(experiment.workspace, archive_after=None)
    parent = experiment.start_logging(display_name="sweep")
    parent.tag("model", "cnn")
    child = parent.child_run("trial-0")
    child.fail(error_details="diverged")
    parent.complete()
    other = experiment.start_logging(display_name="baseline")
    other.add_properties({"lr": "0.1"})
    other.cancel()
    wait_until(lambda: other.get_status() == "Canceled", 30, "the runs ended")
    return parent, child, other


class TestReadBack:
    def test_a_run_attached_by_id_is_as_its_record_says(
        self, experiment: Experiment, family: tuple[Run, Run, Run]
    ) -> None:
        parent, child, _ = family

        again, child_again = Run(experiment, parent.id), Run(experiment, child.id)

        assert ("Completed", "sweep", None) == (again.status, again.display_name, again.parent_id)
        assert ("Failed", "trial-0", parent.id) == (child_again.status, child_again.display_name, child_again.parent_id)

    def test_children_are_as_their_records_say(self, family: tuple[Run, Run, Run]) -> None:
        parent, child, _ = family

        (found,) = parent.get_children()

        assert (child.id, "Failed", "trial-0", parent.id) == (
            found.id,
            found.status,
            found.display_name,
            found.parent_id,
        )

    def test_an_unknown_run_id_raises_naming_the_workspace(self, experiment: Experiment) -> None:
        with pytest.raises(RunNotFoundError, match=experiment.workspace.name):
            Run(experiment, f"{experiment.name}_1800000000_0a1b2c3d")


class TestGetRuns:
    def test_top_level_runs_newest_first_as_a_generator(
        self, experiment: Experiment, family: tuple[Run, Run, Run]
    ) -> None:
        parent, child, other = family

        runs = experiment.get_runs()
        first = next(experiment.get_runs())
        every = {(r.id, r.status, r.display_name) for r in experiment.get_runs(include_children=True)}

        assert isinstance(runs, types.GeneratorType)
        assert [other.id, parent.id] == [r.id for r in runs]
        assert (other.id, "Canceled", "baseline") == (first.id, first.status, first.display_name)
        assert {(child.id, "Failed", "trial-0")} == set(every) - {
            (other.id, "Canceled", "baseline"),
            (parent.id, "Completed", "sweep"),
        }

    def test_filtered_by_tags_properties_and_type(self, experiment: Experiment, family: tuple[Run, Run, Run]) -> None:
        parent, _, other = family

        assert [parent.id] == [r.id for r in experiment.get_runs(tags="model")]
        assert [parent.id] == [r.id for r in experiment.get_runs(tags={"model": "cnn"})]
        assert [] == [r.id for r in experiment.get_runs(tags={"model": "rnn"})]
        assert [other.id] == [r.id for r in experiment.get_runs(properties={"lr": "0.1"})]
        assert [] == list(experiment.get_runs(type="azureml.scriptrun"))
        assert {other.id, parent.id} == {r.id for r in experiment.get_runs(type="runstream.interactive")}


class TestWritesAsAzure:
    def test_sys_exit_0_in_the_block_completes_the_run(self, experiment: Experiment) -> None:
        ended, failed = experiment.start_logging(), experiment.start_logging()

        with pytest.raises(SystemExit), ended:
            sys.exit(0)
        with pytest.raises(SystemExit), failed:
            sys.exit(3)

        assert ("Completed", "Failed") == (ended.status, failed.status)

    def test_properties_are_immutable(self, experiment: Experiment, family: tuple[Run, Run, Run]) -> None:
        run = experiment.start_logging()
        run.add_properties({"lr": "0.1", "seed": "7"})
        run.add_properties({"lr": "0.1"})  # the same value again: nothing changes
        attached = Run(experiment, family[2].id)  # its record has lr = 0.1

        with pytest.raises(ValueError, match="immutable"):
            run.add_properties({"lr": "0.2", "depth": "3"})
        with pytest.raises(ValueError, match="immutable"):
            attached.add_properties({"lr": "0.3"})
        run.complete()

        assert {"lr": "0.1", "seed": "7"} == run.get_properties()  # the refused call added nothing
        assert {"lr": "0.1"} == attached.get_properties()


class TestLookups:
    def test_run_get_workspace_get_run_and_run_list(self, experiment: Experiment, family: tuple[Run, Run, Run]) -> None:
        parent, child, other = family
        workspace = experiment.workspace

        got, from_workspace = Run.get(workspace, child.id), workspace.get_run(parent.id)
        failed = [r.id for r in Run.list(experiment, status="Failed", include_children=True)]

        assert (child.id, experiment.name, "Failed") == (got.id, got.experiment and got.experiment.name, got.status)
        assert ("sweep", {"model": "cnn"}) == (from_workspace.display_name, from_workspace.tags)
        assert {"lr": "0.1"} == Run.get(workspace, other.id).properties
        assert [child.id] == failed
        assert [other.id] == [r.id for r in Run.list(experiment, status="Canceled")]
        with pytest.raises(RunNotFoundError, match=workspace.name):
            workspace.get_run(f"{experiment.name}_1700000000_0a1b2c3d")
