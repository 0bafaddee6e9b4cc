"""One-line errors for bad input, and the wrapper every entry point runs in."""
import io
import sys


# what str.splitlines breaks a line at, shown escaped in an error message
LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


class UserError(Exception):
    """Bad input the user can fix: printed as one line, no traceback. A line
    break in the message (in a path or a value it quotes from the input) is
    shown escaped, so that the message stays one line whatever it quotes."""

    def __init__(self, message=""):
        super().__init__(str(message).translate(LINE_BREAKS))


def one_line(err, limit=200):
    """``Type: message`` of an exception raised by a library, on one line
    (its first non-blank line, cut at ``limit`` characters), for a
    one-line error that quotes it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def run_cli(main, argv=None):
    """Run ``main(argv)``; a UserError becomes ``error: <message>`` and exit 2,
    Ctrl-C (outside training, which saves and stops on its own) one line and
    exit 130: every write is a temp file renamed into place when complete
    (utils/base/io.py), so an interrupt leaves no half-written file.

    ``--debug`` in argv re-raises instead, to show the traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):
        # a file name that is not UTF-8 (kept by Python as lone surrogates)
        # prints escaped instead of raising UnicodeEncodeError after the work is done
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        return main(argv)
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if "--debug" in argv:
            raise
        print("interrupted (Ctrl-C): stopped; no file was left half-written", file=sys.stderr)
        sys.exit(INTERRUPTED)
