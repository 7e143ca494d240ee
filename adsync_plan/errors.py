"""One error base with sentences for people; only the CLI turns errors into exit codes."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class AdsyncError(Exception):
    """An error the user can act on. `str(err)` is a complete, user-ready sentence."""

    exit_code = EXIT_ERROR


class UsageError(AdsyncError):
    exit_code = EXIT_USAGE


class ConfigError(AdsyncError):
    """The configuration file is missing, broken or means something impossible."""


class InputError(AdsyncError):
    """A data file (LDIF, state, plan, PBX file) is missing or invalid."""


class SourceError(AdsyncError):
    """The directory could not be read completely."""


class PbxError(AdsyncError):
    """The PBX could not be read, or refused a change."""


class PlanRefused(AdsyncError):
    """A plan may not be made or applied (safety valve, stale, expired, already applied)."""


class LockError(AdsyncError):
    """Another run holds the state lock."""


class Interrupted(AdsyncError):
    """Ctrl-C or SIGTERM stopped the command where it was safe to stop."""

    exit_code = EXIT_INTERRUPTED
