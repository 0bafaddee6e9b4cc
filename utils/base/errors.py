"""One-line errors for bad input, and the wrapper every entry point runs in."""
import sys


class UserError(Exception):
    """Bad input the user can fix: printed as one line, no traceback."""


def run_cli(main, argv=None):
    """Run ``main(argv)``; a UserError becomes ``error: <message>`` and exit 2.

    ``--debug`` in argv re-raises instead, to show the traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        return main(argv)
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
