"""deploy/Dockerfile: the image the compose files and manifests run."""

from __future__ import annotations

import shlex

from tests.deploy.files import REPO, dockerfile, exec_form, final_stage, image_environment, package_sources


class TestDockerfile:
    """The image: python:3.11-slim, the server extra, a non-root user, ``runstream`` as entrypoint."""

    def test_base_image(self) -> None:
        bases = [args.split()[0] for keyword, args in dockerfile() if "FROM" == keyword]

        assert {"python:3.11-slim"} == set(bases)

    def test_installs_the_server_extra(self) -> None:
        runs = " ".join(args for keyword, args in dockerfile() if "RUN" == keyword)

        assert "install '.[server]'" in runs

    def test_copies_what_the_wheel_is_built_from(self) -> None:
        copied = {
            source.rstrip("/")
            for keyword, args in dockerfile()
            if "COPY" == keyword and "--from" not in args
            for source in shlex.split(args)[:-1]
        }
        needed = {"pyproject.toml", "README.md", *(str(p.relative_to(REPO)) for p in package_sources().values())}

        assert needed <= copied
        assert all((REPO / source).exists() for source in copied)

    def test_runs_as_a_non_root_user(self) -> None:
        (user,) = [args for keyword, args in final_stage() if "USER" == keyword]

        assert user.split(":")[0] not in {"root", "0"}

    def test_entrypoint(self) -> None:
        assert ["runstream"] == exec_form("ENTRYPOINT")

    def test_data_dir_is_writable_by_the_user(self) -> None:
        """The image's data folder is the home the user owns (a fresh volume takes its owner)."""
        runs = " ".join(args for keyword, args in final_stage() if "RUN" == keyword)

        assert f"--home-dir {image_environment()['RUNSTREAM_DATA_DIR']}" in runs
        assert "--create-home" in runs
