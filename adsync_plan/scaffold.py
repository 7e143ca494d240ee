"""`init`: the files of a new adsync-plan project (SPEC 3), made from the templates in adsync_plan/templates.

`project_files` is pure (name -> text); `write_project` refuses to overwrite anything and writes all or nothing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from adsync_plan import __version__, schemas
from adsync_plan.errors import ConfigError

# the environment variables the generated configuration names for its secrets
SECRET_OF_SOURCE = {"ldap": "ADSYNC_LDAP_PASSWORD", "azure": "ADSYNC_AZURE_CLIENT_SECRET", "ldif": None}
SECRET_OF_PBX = {"starface": "ADSYNC_STARFACE_PASSWORD", "file": None}
# secrets a PBX may need (pbx.client_secret_env, commented out in the template): the jobs get them, and an
# unset repository secret is an empty variable that nothing reads unless the configuration names it
OPTIONAL_OF_PBX = {"starface": ("ADSYNC_STARFACE_CLIENT_SECRET", "STARFACE 10 and later"), "file": None}
# plan.signing_key_env in the pipelines (optional): the jobs that sign or check plans get this secret
SIGNING_KEY = "ADSYNC_PLAN_SIGNING_KEY"
SCHEMA_COPY = ".adsync/config.schema.json"
GITHUB_WORKFLOW = ".github/workflows/adsync-plan.yml"
GITLAB_CI = ".gitlab-ci.yml"


def template(name: str) -> str:
    return resources.files("adsync_plan.templates").joinpath(name).read_text(encoding="utf-8")


def project_files(source: str, pbx: str) -> dict[str, str]:
    """Relative path -> content of every file `init` writes."""
    config = (
        template("adsync.yaml")
        .replace("@@SOURCE@@", source)
        .replace("@@PBX@@", pbx)
        .replace("@@SOURCE_SECTION@@", template(f"source-{source}.yaml"))
        .replace("@@PBX_SECTION@@", template(f"pbx-{pbx}.yaml"))
    )
    files = {
        "adsync.yaml": config,
        SCHEMA_COPY: schemas.schema_text("config"),
        ".gitignore": template("gitignore"),
        "states/.gitkeep": "",
        "plans/.gitkeep": "",
        GITHUB_WORKFLOW: _pipeline("github-workflow.yml", source, pbx),
        GITLAB_CI: _pipeline("gitlab-ci.yml", source, pbx),
    }
    if source == "ldif":
        files["directory.ldif"] = template("sample-directory.ldif")
    if pbx == "file":
        files["pbx.yaml"] = template("sample-pbx.yaml")
    return files


def secret_names(source: str, pbx: str) -> list[str]:
    """The environment variables a new project's secrets come from."""
    return [s for s in (SECRET_OF_SOURCE[source], SECRET_OF_PBX[pbx]) if s]


def _pipeline(name: str, source: str, pbx: str) -> str:
    optional, when = OPTIONAL_OF_PBX[pbx] or (None, "")
    pbx_secrets = [s for s in (SECRET_OF_PBX[pbx], optional) if s]
    all_secrets = [*secret_names(source, pbx), *([optional] if optional else [])]
    names = [*secret_names(source, pbx), *([f"{optional} ({when})"] if optional else [])]
    return (
        template(name)
        .replace("@@VERSION@@", __version__)
        .replace("@@SECRET_NAMES@@", ", ".join(names) or "none (ldif source and file PBX)")
        .replace("@@PBX_ENV@@\n", _github_env([*pbx_secrets, SIGNING_KEY]))  # apply checks the signature
        .replace("@@SYNC_ENV@@\n", _github_env([*all_secrets, SIGNING_KEY]))  # sync signs and checks its plan
        .replace("@@ALL_ENV@@\n", _github_env(all_secrets))
    )


def _github_env(names: list[str]) -> str:
    """A job's env block with the secrets it needs; none: no block (actionlint rejects an empty one)."""
    if not names:
        return ""
    return "    env:\n" + "".join(f"      {n}: ${{{{ secrets.{n} }}}}\n" for n in names)


def write_project(folder: Path, files: dict[str, str]) -> None:
    """Write every file, or none: an existing file is never overwritten."""
    existing = [name for name in files if (folder / name).exists()]
    if existing:
        raise ConfigError(
            f"{folder}: init never overwrites files and {', '.join(existing)} exist already, so nothing was "
            "written; run it in an empty folder, or move those files away first."
        )
    for name, text in files.items():
        path = folder / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as fh:  # "x": even a file created meanwhile is not overwritten
                fh.write(text)
        except OSError as err:
            raise ConfigError(f"{path}: cannot write it: {err.strerror}; nothing more was written.") from None
