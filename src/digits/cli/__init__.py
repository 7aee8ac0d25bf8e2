"""The `digits` command: parses arguments and calls the library. Nothing else lives here.

Each group of commands has its own module (training, studying, using); this one builds the parser and runs
a command, turning a user's mistake (a DigitsError) into one sentence and exit status 1. Heavy libraries
(Keras, TensorFlow) are imported inside the command handlers, so `digits --help` and `digits data` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile

from digits import __version__
from digits.cli.studying import add_ensemble_commands, add_study_commands
from digits.cli.sweeping import add_sweep_commands
from digits.cli.training import add_data_commands, add_training_commands
from digits.cli.using import add_export_commands, add_predict_commands, add_serve_commands
from digits.errors import DigitsError

# --- entry point ----------------------------------------------------------------------------------

# Library errors name parameters in backticks (`epochs`, `validation=holdout`); the CLI shows the flag that
# sets each. Parameters whose flag is not simply --name-with-dashes:
FLAG_NAMES = {"out_dir": "--out", "show": "--show", "allowed_hosts": "--allow-host"}
PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


def in_flag_words(message: str) -> str:
    """`validation=holdout` → --validation holdout, `target_accuracy=None` → --target-accuracy none."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        option = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        return option if value is None else f"{option} {value.strip(chr(34)).replace('None', 'none')}"

    return PARAMETER.sub(flag, message)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits",
        description="Train, understand, compare and use MNIST handwritten-digit classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"digits {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    # In the order a newcomer meets them: the data, training, evaluation, then using a model.
    add_data_commands(subcommands)
    add_training_commands(subcommands)
    add_study_commands(subcommands)
    add_ensemble_commands(subcommands)
    add_sweep_commands(subcommands)
    add_predict_commands(subcommands)
    add_serve_commands(subcommands)
    add_export_commands(subcommands)
    return parser


@contextlib.contextmanager
def native_stderr_to_log():
    """Send native (C++) stderr to a log file while a command runs, keeping Python's stderr on screen.

    TensorFlow writes start-up lines through absl before its logging is initialised, and those ignore
    TF_CPP_MIN_LOG_LEVEL; a user should see our one-sentence errors, not that noise. Set
    DIGITS_NATIVE_STDERR=1 to see it. Only done when stderr is the real terminal stream (not under
    pytest's capture). The log is an anonymous temporary file (created exclusively, never at a name
    another user could plant a link or a folder at) and is gone when the command ends.
    """
    if os.environ.get("DIGITS_NATIVE_STDERR") or sys.stderr is not sys.__stderr__:
        yield
        return
    try:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        log = tempfile.TemporaryFile()
    except OSError:  # No writable temporary folder: the noise stays on screen, the command still runs.
        os.close(terminal_fd)
        yield
        return
    os.dup2(log.fileno(), 2)
    log.close()
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(terminal_fd), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)


def stop_on_sigterm() -> None:
    """Make SIGTERM (how systemd, Docker and `kill` stop a program) end a command the way Ctrl+C does.

    Training then keeps its last finished epoch and the server stops its workers, instead of dying at once.
    """
    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # Only the main thread may set handlers (not in an embedding program).
        signal.signal(signal.SIGTERM, interrupt)


def stop_writing_to_a_closed_pipe() -> int:
    """End quietly when whatever read our output has gone (`digits predict --json | head`), as `cat` would.

    What Python still holds for standard output goes to /dev/null, or flushing it at exit would fail again.
    The status is a shell's for a program ended by SIGPIPE (128 + 13), as 130 is for Ctrl+C.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    with native_stderr_to_log():
        try:
            status = args.handler(args) or 0
            sys.stdout.flush()  # A reader that left (`| head`) is met here, inside the handlers below, not at exit.
            return status
        except DigitsError as error:
            print(f"digits: error: {in_flag_words(str(error))}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("digits: interrupted.", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return stop_writing_to_a_closed_pipe()


if __name__ == "__main__":
    sys.exit(main())
