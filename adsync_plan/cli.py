"""The command line: each command parses options, calls the pipeline and hands results to `output`."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import re
import sys
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

try:  # typer 0.16+ vendors click; older typer uses the click package
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover
    from click import exceptions as click

from adsync_plan import __version__, interrupts, output, pipeline
from adsync_plan.config import load_config, parse_duration
from adsync_plan.errors import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AdsyncError,
    ConfigError,
)

log = logging.getLogger("adsync_plan")

app = typer.Typer(
    name="adsync-plan",
    help="Keep STARFACE PBX users in step with Active Directory and Entra ID, Terraform-style.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


class LogLevel(StrEnum):
    trace = "trace"
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


ConfigOpt = Annotated[Path, typer.Option("-c", "--config", help="The configuration file.")]
DetailedOpt = Annotated[bool, typer.Option("--detailed", help="Every field of every change, not one line each.")]
RedactOpt = Annotated[
    bool,
    typer.Option(
        "--redact", help="Replace e-mail addresses and phone numbers by placeholders; --redact=names: names too."
    ),
]
# `--redact=names` is rewritten to this before parsing (see `run`): click has no flag with an optional value
RedactNamesOpt = Annotated[bool, typer.Option("--redact-names", hidden=True)]
DEFAULT_CONFIG = Path("adsync.yaml")


def _version(value: bool) -> None:
    if value:
        output.out(f"adsync-plan {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    log_level: Annotated[LogLevel, typer.Option(help="How much to log (to standard error).")] = LogLevel.warning,
    log_format: Annotated[LogFormat, typer.Option(help="text for people, json for pipelines.")] = LogFormat.text,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours in messages.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    output.setup(log_level.value, log_format.value, color=not (no_color or os.environ.get("NO_COLOR")))


@app.command()
def validate(
    config: ConfigOpt = DEFAULT_CONFIG,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON (for editors and CI).")] = False,
) -> int:
    """Check the configuration (schema and meaning)."""
    try:
        cfg = load_config(config)
    except ConfigError as err:
        if not json_out:
            raise
        output.out(json.dumps({"valid": False, "file": str(config), "problems": str(err).splitlines()}, indent=2))
        return EXIT_ERROR
    if json_out:
        output.out(
            json.dumps(
                {"valid": True, "file": str(config), "source": cfg.source["type"], "pbx": cfg.pbx["type"]}, indent=2
            )
        )
    else:
        output.out(f"{config}: the configuration is valid ({cfg.source['type']} source, {cfg.pbx['type']} PBX).")
    return EXIT_OK


@app.command()
def render(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Where to write (default states/desired.yaml).")
    ] = None,
) -> int:
    """Read the directory, apply the rules, write the desired state."""
    cfg = load_config(config)
    state, path = pipeline.render_to_file(cfg, out, output.progress())
    held = len(state.rendered.held)
    output.out(
        f"Wrote {path}: {len(state.rendered.desired)} users; {held} held by the directory rules "
        "(`plan` adds the PBX rules)."
    )
    return EXIT_OK


@app.command()
def refresh(config: ConfigOpt = DEFAULT_CONFIG) -> int:
    """Read the PBX and write the state snapshot (states/pbx.yaml)."""
    cfg = load_config(config)
    snap = pipeline.refresh(cfg, output.progress())
    output.out(f"Wrote {cfg.snapshot_path}: {len(snap.state.users)} PBX users, serial {snap.serial}.")
    return EXIT_OK


@app.command()
def plan(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Save the plan to this file.")] = None,
    desired: Annotated[Path | None, typer.Option(help="Plan from this desired state instead of the source.")] = None,
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Use the committed snapshot; no PBX access.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the plan as Markdown.")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
    allow_mass_orphan: Annotated[
        bool, typer.Option("--allow-mass-orphan", help="Override the safety valve (R13).")
    ] = False,
    detailed: DetailedOpt = False,
    redact: RedactOpt = False,
    redact_names: RedactNamesOpt = False,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Plan only this user (user.<account> or pbx_user.<login ID>); repeatable.",
            show_default=False,
        ),
    ] = None,
    refresh_only: Annotated[
        bool,
        typer.Option("--refresh-only", help="Only show what changed on the PBX since the committed snapshot."),
    ] = False,
) -> int:
    """Diff the desired state against the PBX, check every rule, print the plan and save it."""
    _exclusive(json_out, markdown)
    cfg = load_config(config)
    if refresh_only:
        redactor = output.Redactor(redact, redact_names)
        other = target or desired or no_refresh
        return _plan_refresh_only(cfg, out, json_out, markdown, detailed_exitcode, other, redactor)
    result = pipeline.make_plan(
        cfg, desired, not no_refresh, allow_mass_orphan, output.progress(), targets=tuple(target or ())
    )
    _log_decisions(result)
    _print_plan(result.plan, json_out, markdown, output.Redactor(redact, redact_names), detailed, _held_by(result))
    if result.refused:
        output.error(
            "the safety valve refused the plan: "
            + "; ".join(result.refused)
            + ". Check the source and scope; if this is intended, plan again with --allow-mass-orphan."
        )
        return EXIT_ERROR
    if out:
        from adsync_plan.planfile import save_plan, signing_key

        save_plan(out, result.plan, signing_key(cfg, needed=False))
        output.info(f"Saved the plan to {out}; apply it with `adsync-plan apply {out}`.")
    return EXIT_CHANGES if detailed_exitcode and result.plan.has_changes else EXIT_OK


def _plan_refresh_only(
    cfg, out: Path | None, json_out: bool, markdown: bool, detailed_exitcode: bool, other, redactor
) -> int:
    if other:
        raise click.UsageError("--refresh-only reads only the PBX: leave out --target, --desired and --no-refresh.")
    plan_obj = pipeline.plan_refresh_only(cfg, output.progress())
    _print_plan(plan_obj, json_out, markdown, redactor)
    if out:
        from adsync_plan.planfile import save_plan, signing_key

        save_plan(out, plan_obj, signing_key(cfg, needed=False))
        output.info(f"Saved the plan to {out}; `adsync-plan apply {out}` writes the snapshot, nothing on the PBX.")
    changed = bool(plan_obj.refresh_only["pbx_changes"])
    return EXIT_CHANGES if detailed_exitcode and changed else EXIT_OK


@app.command()
def show(
    planfile: Annotated[
        Path | None, typer.Argument(help="A saved plan (default: the newest under plans/).", show_default=False)
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print as Markdown for a pull request.")] = False,
    detailed: DetailedOpt = False,
    redact: RedactOpt = False,
    redact_names: RedactNamesOpt = False,
) -> int:
    """Print a saved plan."""
    _exclusive(json_out, markdown)
    from adsync_plan.planfile import load_plan

    plan_obj = load_plan(planfile or _newest_plan(Path("plans")))
    _print_plan(plan_obj, json_out, markdown, output.Redactor(redact, redact_names), detailed)
    return EXIT_OK


def _newest_plan(folder: Path) -> Path:
    plans = sorted(folder.glob("*.plan.json"), key=lambda p: (p.stat().st_mtime, p.name)) if folder.is_dir() else []
    if not plans:
        raise click.UsageError(f"no saved plan under {folder}/; name the plan file: adsync-plan show PLANFILE.")
    output.info(f"Showing {plans[-1]}, the newest plan under {folder}/.")
    return plans[-1]


LockTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--lock-timeout",
        help="How long to wait for the state lock, e.g. 30s or 5m (default: state.lock_timeout).",
        show_default=False,
    ),
]


def _with_lock_timeout(cfg, lock_timeout: str | None):
    if lock_timeout is None:
        return cfg
    if not re.fullmatch(r"[0-9]{1,6}[smh]", lock_timeout):
        raise click.UsageError(f"--lock-timeout {lock_timeout}: write a duration such as 0s, 30s, 5m or 1h.")
    return replace(cfg, lock_timeout=parse_duration(lock_timeout).total_seconds())


def _with_parallelism(cfg, parallelism: int | None):
    return cfg if parallelism is None else replace(cfg, pbx={**cfg.pbx, "parallelism": parallelism})


@app.command()
def apply(
    planfile: Annotated[Path, typer.Argument(help="A saved plan.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    lock_timeout: LockTimeoutOpt = None,
    parallelism: Annotated[
        int | None,
        typer.Option(
            "--parallelism",
            min=1,
            max=32,
            help="Users whose steps run at a time (default: pbx.parallelism, else 4); 1: one step after the other.",
        ),
    ] = None,
) -> int:
    """Carry out a saved plan; nothing else ever writes to the PBX."""
    cfg = _with_parallelism(_with_lock_timeout(load_config(config), lock_timeout), parallelism)
    result = pipeline.apply(cfg, planfile, output.progress())
    if result.plan.refresh_only is not None:
        serial = result.snapshot.serial if result.snapshot else "?"
        output.out(
            f"Apply complete: {cfg.snapshot_path} records the PBX as read (serial {serial}); nothing changed on it."
        )
        return EXIT_OK
    output.out(
        f"Apply complete: {len(result.done)} steps. {output.summary_line(result.plan).replace('Plan: ', 'Applied: ')}"
    )
    return EXIT_OK


class SourceType(StrEnum):
    ldap = "ldap"
    azure = "azure"
    ldif = "ldif"


class PbxType(StrEnum):
    starface = "starface"
    file = "file"


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to create the project (default: here).")] = Path("."),
    source: Annotated[SourceType, typer.Option(help="Where users come from.")] = SourceType.ldap,
    pbx: Annotated[PbxType, typer.Option(help="The PBX to keep in step.")] = PbxType.starface,
) -> int:
    """Write a commented adsync.yaml, states/, plans/, .gitignore and example CI pipelines."""
    from adsync_plan import scaffold

    files = scaffold.project_files(source.value, pbx.value)
    scaffold.write_project(folder, files)
    output.out(f"Wrote {len(files)} files in {folder}: {', '.join(sorted(files))}.")
    output.out(_init_next_steps(folder, source.value, pbx.value))
    return EXIT_OK


def _init_next_steps(folder: Path, source: str, pbx: str) -> str:
    from adsync_plan.scaffold import secret_names

    secrets = secret_names(source, pbx)
    steps = ["Next:"]
    if folder != Path("."):
        steps.append(f"  cd {folder}")
    steps.append("  edit adsync.yaml (your groups, number blocks, protected logins), then: adsync-plan validate")
    if secrets:
        steps.append(f"  export {' '.join(s + '=...' for s in secrets)}")
    steps += [
        "  adsync-plan render && adsync-plan refresh      # states/desired.yaml and states/pbx.yaml",
        "  adsync-plan plan -o plans/first.plan.json      # review it, then:",
        "  adsync-plan apply plans/first.plan.json",
    ]
    return "\n".join(steps)


@app.command()
def explain(
    account: Annotated[str, typer.Argument(help="sAMAccountName, user.<account>, source id, or pbx_user.<login>.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    desired: Annotated[
        Path | None, typer.Option(help="Explain from this desired state instead of reading the source.")
    ] = None,
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Use the committed snapshot; no PBX access.")
    ] = False,
) -> int:
    """Every rule decision for one user: values and their attributes, scope, rules, match and plan."""
    from adsync_plan.explain import explain as explain_user

    cfg = load_config(config)
    if desired is not None:
        directory, result = None, pipeline.make_plan(cfg, desired, not no_refresh, False, output.progress())
    else:
        directory, result = pipeline.plan_with_directory(cfg, not no_refresh, output.progress())
    output.out("\n".join(explain_user(account, cfg, result, directory)).rstrip())
    return EXIT_OK


@app.command()
def sync(
    config: ConfigOpt = DEFAULT_CONFIG,
    yes: Annotated[bool, typer.Option("--yes", help="Apply the plan at once (without: only plan).")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are (or were) changes.")
    ] = False,
    allow_mass_orphan: Annotated[
        bool, typer.Option("--allow-mass-orphan", help="Override the safety valve (R13).")
    ] = False,
    lock_timeout: LockTimeoutOpt = None,
) -> int:
    """Plan and, with --yes, apply at once within every safety limit (for scheduled runs)."""
    cfg = _with_lock_timeout(load_config(config), lock_timeout)
    result = pipeline.sync(cfg, yes, allow_mass_orphan, output.progress())
    planned = result.planned
    _log_decisions(planned)
    output.out(output.plan_text(planned.plan, held_by=_held_by(planned)))
    if planned.refused:
        output.error(
            "the safety valve refused the plan, nothing was applied: "
            + "; ".join(planned.refused)
            + ". Check the source and scope; if this is intended, run sync again with --allow-mass-orphan."
        )
        return EXIT_ERROR
    if result.applied is not None:
        output.out(
            f"Apply complete: {len(result.applied.done)} steps, plan saved as {result.plan_path}. "
            + output.summary_line(planned.plan).replace("Plan: ", "Applied: ")
        )
    elif planned.plan.has_changes:
        output.info("Only planned; run `adsync-plan sync --yes` to apply these changes.")
    return EXIT_CHANGES if detailed_exitcode and planned.plan.has_changes else EXIT_OK


def _log_decisions(result) -> None:
    from adsync_plan.explain import log_decisions

    log_decisions(result)


@app.command()
def doctor(
    config: ConfigOpt = DEFAULT_CONFIG,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="A report to attach when asking for help (Markdown).")
    ] = False,
) -> int:
    """Read-only first contact with the PBX: sign-in, version, call services and permissions and what they
    map to, the number inventory, system-looking users, unconfirmed assumptions. Exit 1 when a mapping
    apply needs is missing or ambiguous."""
    profile = pipeline.doctor(load_config(config))
    output.out(output.doctor_markdown(profile) if markdown else output.doctor_text(profile))
    return EXIT_ERROR if profile["problems"] else EXIT_OK


@app.command("force-unlock")
def force_unlock(
    lock_id: Annotated[str, typer.Argument(help="The id shown in the lock message (`broken` for a broken lock file).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    force: Annotated[
        bool, typer.Option("--force", help="Also remove the lock of a process on this host that is still running.")
    ] = False,
) -> int:
    """Remove a lock left by a crashed run, then recover from its journal if it was an apply."""
    cfg = load_config(config)
    info, recovered = pipeline.force_unlock(cfg, lock_id, force)
    if "problem" in info:
        output.out(f"Removed the broken lock file {cfg.state_dir / '.adsync.lock'} (it {info['problem']}).")
    else:
        output.out(
            f"Removed the lock {lock_id} held by {info.get('who')} on {info.get('host')} since {info.get('since')}."
        )
    if recovered:
        output.out(
            f"Recovered the killed apply of plan {recovered['plan_id']}: {recovered['created_found']} new user(s) "
            "bound, snapshot and audit written; run plan again to converge."
        )
    return EXIT_OK


state_app = typer.Typer(
    help="Inspect and edit the bindings in the state snapshot (list, show, rm).", no_args_is_help=True
)
app.add_typer(state_app, name="state")
AddressArg = Annotated[
    str, typer.Argument(help="user.<account>, pbx_user.<login>, a source id or a PBX user id.", show_default=False)
]


@state_app.command("list")
def state_list(config: ConfigOpt = DEFAULT_CONFIG) -> int:
    """One line per binding: address, source id, PBX user id, login."""
    output.out(output.state_list_text(pipeline.state_list(load_config(config))))
    return EXIT_OK


@state_app.command("show")
def state_show(address: AddressArg, config: ConfigOpt = DEFAULT_CONFIG) -> int:
    """One binding and its PBX user as the snapshot has it."""
    binding, user = pipeline.state_show(load_config(config), address)
    output.out(output.state_show_text(binding, user))
    return EXIT_OK


@state_app.command("rm")
def state_rm(address: AddressArg, config: ConfigOpt = DEFAULT_CONFIG, lock_timeout: LockTimeoutOpt = None) -> int:
    """Forget a binding; the PBX user itself is not touched (the next plan matches it by e-mail again)."""
    cfg = _with_lock_timeout(load_config(config), lock_timeout)
    binding = pipeline.state_rm(cfg, address)
    output.out(
        f"Removed the binding {binding.address or binding.source_id} -> PBX user {binding.pbx_user_id} "
        f"from {cfg.snapshot_path}."
    )
    return EXIT_OK


@app.command("import")
def import_(
    account: Annotated[str, typer.Argument(help="The directory user's account (as in the desired state).")],
    pbx_user_id: Annotated[str, typer.Argument(help="The id of an existing PBX user (see states/pbx.yaml).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    lock_timeout: LockTimeoutOpt = None,
) -> int:
    """Bind a directory user to an existing PBX user by hand (the next plan updates it, never creates it)."""
    cfg = _with_lock_timeout(load_config(config), lock_timeout)
    binding = pipeline.import_user(cfg, account, pbx_user_id)
    output.out(
        f"Imported {binding.address}: bound to PBX user {binding.pbx_user_id} (login {binding.login_id}) "
        f"in {cfg.snapshot_path}."
    )
    return EXIT_OK


def _exclusive(json_out: bool, markdown: bool) -> None:
    if json_out and markdown:
        raise click.UsageError("--json and --markdown cannot be used together.")


def _print_plan(plan_obj, json_out: bool, markdown: bool, redactor, detailed: bool = False, held_by=None) -> None:
    if redactor.names:  # names in messages too, wherever the plan knows them
        output.learn_names(redactor, plan_obj)
    if json_out:
        output.out(output.plan_json(plan_obj, redactor))
    elif markdown:
        output.out(output.plan_markdown(plan_obj, redactor, held_by))
    else:
        output.out(output.plan_text(plan_obj, redactor, detailed, held_by))


def _held_by(result) -> tuple[int, int] | None:
    """How many users the directory rules held (what render reports) and how many the PBX rules added."""
    if result.desired is None or result.decisions is None or result.plan.targets:  # whole-plan counts
        return None
    return len(result.desired.rendered.held), len(result.decisions.held)


def main(argv: list[str] | None = None) -> None:
    # One short run over up to 100,000 users makes millions of small objects and no cycles worth
    # collecting: the cyclic GC would only rescan them again and again (a third of the time at 100,000).
    gc.disable()
    interrupts.install()  # SIGTERM unwinds like Ctrl-C: locks released, no half-written file
    code = run(argv)
    # Every file is written and closed by now. Leave without freeing those objects one by one (half a
    # second at 100,000 users): flush what is buffered and let the system reclaim the memory at once.
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the reader went away (`| head`): nothing more can be said
        pass
    os._exit(code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code: usage errors 64, user errors 1 with one sentence."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--redact-names" if arg == "--redact=names" else arg for arg in argv]
    if single_dash := _terraform_style_option(argv):
        output.error(
            f"{single_dash}: long options take two dashes here: --{single_dash.lstrip('-')} "
            "(a single dash reads `-out=FILE` as `-o ut=FILE`)."
        )
        return EXIT_USAGE
    if "--no-color" in argv[1:]:  # accepted after the subcommand too, as people type it
        argv = ["--no-color"] + [a for a in argv if a != "--no-color"]
    try:
        code = _command()(args=argv, standalone_mode=False, prog_name="adsync-plan")
    except typer.Exit as done:
        return done.exit_code
    except click.NoArgsIsHelpError:
        return EXIT_USAGE  # the help was printed
    except click.UsageError as err:
        output.error(f"{err.format_message()} (see `adsync-plan {_cmd(err)}--help`)")
        return EXIT_USAGE
    except typer.Abort:
        output.error("aborted.")
        return EXIT_ERROR
    except AdsyncError as err:
        log.log(output.TRACE, "traceback", exc_info=True)  # shown at --log-level trace only
        output.error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:  # noqa: BLE001 - a bug or an unwrapped library error: one sentence, no traceback
        log.log(output.TRACE, "traceback", exc_info=True)
        output.error(
            f"unexpected {type(err).__name__}: {err}. This is a bug in adsync-plan; run again with "
            "--log-level trace for the details and report it."
        )
        return EXIT_ERROR
    if code == EXIT_INTERRUPTED:  # typer answers a KeyboardInterrupt by returning 130; no command returns it
        return _interrupted()
    return code if isinstance(code, int) else EXIT_OK


def _interrupted() -> int:
    output.error(
        "stopped by Ctrl-C or SIGTERM before it finished; no file was left half-written and the lock is "
        "released (an apply cut short is recovered from its journal by the next apply, refresh or sync); "
        "run the command again."
    )
    return EXIT_INTERRUPTED


@functools.cache
def _command():
    """The click command typer makes of `app`, made once: it evaluates every option's annotations (30 ms),
    which the tests, running the CLI in process thousands of times, would pay each time."""
    import typer.main

    return typer.main.get_command(app)


def _long_option_names() -> set[str]:
    group = _command()
    commands = [group, *group.commands.values()]
    return {o[2:].split("=")[0] for c in commands for p in c.params for o in p.opts if o.startswith("--")}


def _terraform_style_option(argv: list[str]) -> str | None:
    """`-out=FILE`, `-target=x`, `-lock-timeout=5m`: Terraform's single-dash long options, which click would
    read as short options with glued values (-o "ut=FILE"). Returns the first one found."""
    names = None
    for arg in argv:
        if arg == "--":
            return None
        match = re.fullmatch(r"-([a-z][a-z-]+)(=.*)?", arg)
        if match:
            names = names if names is not None else _long_option_names()
            if match.group(2) is not None or "-" in match.group(1) or match.group(1) in names:
                return arg.split("=")[0]
    return None


def _cmd(err: click.UsageError) -> str:
    ctx = getattr(err, "ctx", None)
    return f"{ctx.info_name} " if ctx is not None and ctx.parent is not None else ""
