"""Running the entry points: in a fresh Python (``run_python``, with the tiny
test net: ``run_tiny``), in this process (``run_in_process``), or
interrupted with Ctrl-C (``interrupted``)."""
import contextlib
import io
import os
import signal
import subprocess
import sys
import traceback

import tiny_model  # registers --arch tiny (TINY) in this process, e.g. a test file run as a script
from support.paths import GUARD_DIR, REPO, TESTS

TINY = ["--arch", tiny_model.TINY]


def run_python(*argv, cwd=REPO, timeout=300, extra_env=None):
    """Run ``python *argv`` in the repo (``extra_env``: variables to add or
    replace); returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]))
    env.update(extra_env or {})
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_tiny(script, *argv, timeout=300):
    """``python script *argv`` with ``--arch tiny`` registered (tests/tiny_model.py)."""
    return run_python("-c", tiny_model.TINY_PREFIX, script, *argv, timeout=timeout)


def run_test_script(path, *argv, timeout=300):
    """``python path *argv`` for a test file that is also a script (its
    worker functions at the bottom): tests/ is on PYTHONPATH, so that it
    imports support/ and tiny_model as it does under pytest."""
    return run_python(path, *argv, timeout=timeout,
                      extra_env={"PYTHONPATH": os.pathsep.join([REPO, GUARD_DIR, TESTS])})


def run_script(script, *argv, timeout=300):
    """Run a script of the repo headless (no display: --show must not block)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, GUARD_DIR])
    return subprocess.run([sys.executable, script, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(main, *argv):
    """``main(argv)`` through ``run_cli`` in this process, as ``python
    entry.py *argv`` would run it; returns a CompletedProcess (returncode,
    stdout, stderr). Seconds instead of a Paddle import per call: the CLI
    error contract (exit 2, one ``error:`` line, no traceback) is tested this
    way; each entry point keeps one subprocess test for its ``__main__``
    wiring. An uncaught exception prints its traceback and gives 1, as the
    interpreter does."""
    from utils.base.errors import run_cli
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(main, [str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except Exception:  # noqa: BLE001 - reported as the interpreter would
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def run_predict_inprocess(capsys, argv):
    """predict.py's ``main(argv)`` in this process: (its result, what it printed)."""
    import predict
    result = predict.main(argv)
    return result, capsys.readouterr().out


def interrupted(argv, ready):
    """Run ``python argv``, send SIGINT once a stdout line contains ``ready``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]), PYTHONUNBUFFERED="1")
    # As from a terminal: SIGINT at its default disposition in the child, even if
    # something in this test process left it ignored (an ignored signal is
    # inherited across exec, and Python then installs no KeyboardInterrupt).
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while ready not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert ready in seen, proc.communicate(timeout=120)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def check_interrupted(returncode, err):
    """Ctrl-C outside training: exit 130 and one line, no traceback."""
    assert returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip() and "warn" not in line.lower()]
    assert lines == ["interrupted (Ctrl-C): stopped; no file was left half-written"], err[-2000:]
