"""deploy/README.md: the files it names exist, and its kubectl commands apply the files checked here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.deploy.files import DEPLOY, K8S_CLUSTER, MANIFEST_SETS, REPO


def kubectl_applies(text: str) -> list[list[Path]]:
    """The files each ``kubectl apply -f ...`` command of a text (comment or README) applies, in order
    (a folder's files in name order, as kubectl takes them)."""
    joined = re.sub(r"\\\n[#\s]*", " ", text)  # continuation lines, in a comment too
    commands = [shlex.split(line.lstrip("# ")) for line in joined.splitlines() if "kubectl apply" in line]
    named = [[REPO / words[i + 1] for i, word in enumerate(words) if "-f" == word] for words in commands]
    return [
        [f for path in paths for f in (sorted(path.glob("*.yaml")) if path.is_dir() else [path])] for paths in named
    ]


class TestReadme:
    """deploy/README.md names files that exist and keeps the executors section."""

    def test_named_files_exist(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")
        paths = re.findall(r"(?<![\w/])(?:deploy|k8s|systemd)/[\w./*-]*", text)
        manifests = re.findall(r"(?<![\w/])\d\d-[\w-]+\.yaml", text)  # "skip 20-redis.yaml"
        named = {*(p.removeprefix("deploy/").rstrip("/.") for p in paths), *(f"k8s/{m}" for m in manifests)}

        assert set() == {name for name in named if not list(DEPLOY.glob(name))}

    def test_cluster_is_applied_as_tested(self) -> None:
        """The cluster's kubectl command (README, k8s/cluster/10-settings.yaml) applies the files checked here."""
        texts = [(DEPLOY / "README.md").read_text(encoding="utf-8"), (K8S_CLUSTER / "10-settings.yaml").read_text()]

        commands = [c for text in texts for c in kubectl_applies(text) if any(K8S_CLUSTER == f.parent for f in c)]

        assert [MANIFEST_SETS["k8s/cluster"]] * 2 == commands

    def test_executors_section_kept(self) -> None:
        text = (DEPLOY / "README.md").read_text(encoding="utf-8")

        assert "## Running submitted scripts elsewhere" in text
        assert "Kubernetes executor" in text
