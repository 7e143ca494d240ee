"""`python -m adsync_plan` and the `adsync-plan` command."""

import sys


def entry() -> None:
    try:
        from adsync_plan.cli import main
    except KeyboardInterrupt:  # Ctrl-C while Python still loads the modules: nothing was started yet
        sys.stderr.write("Error: interrupted while starting; nothing was done.\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    entry()
