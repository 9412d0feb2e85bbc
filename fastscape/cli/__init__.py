"""The ``fastscape`` command: a complete picture of a model's loss landscape in one command.

Subcommands: ``landscape`` (the main job), ``hessian``, ``connect``, ``eos`` and ``plot``.
Run ``fastscape SUBCOMMAND --help`` for the options of each.

Stage messages go to stderr (``--quiet`` silences them and the progress bars), the summary to
stdout. Every command writes its results into a temporary sibling of ``--out`` and moves it
into place when it has finished; a lock beside ``--out`` refuses a second writer.

The package, by concern: ``_parser`` (options and subcommands), ``_data`` (reading data,
telling the task), ``_model`` (building or loading the model), ``_compute`` (training, grid
budgets, curvature), ``_output`` (the output directory), ``_landscape`` and ``_commands`` (the
subcommands), ``_common`` (errors, messages, reports).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

from ._common import CLIError, Talk
from ._compute import compute_curvature, describe_point, grid_estimate
from ._data import split_data
from ._model import prepare
from ._output import OutputDir
from ._parser import build_parser

__all__ = ["CLIError", "OutputDir", "build_parser", "describe_point", "grid_estimate", "main"]
# (Talk, compute_curvature, prepare and split_data are imported for the tests)
_TESTED = (Talk, compute_curvature, prepare, split_data)

_RANGE_OPTIONS = ("--range", "--range-x", "--range-y")


def _join_ranges(argv: list[str]) -> list[str]:
    """Let ``--range -2:2`` through: argparse takes '-2:2' for an option otherwise."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _RANGE_OPTIONS and i + 1 < len(argv) and ":" in argv[i + 1]:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastscape`` console script."""
    parser = build_parser()
    args = parser.parse_args(_join_ranges(sys.argv[1:] if argv is None else list(argv)))
    if args.command == "plot":
        args.format_given = args.format is not None
        args.format = args.format or ("png",)
    previous = None
    if argv is None and hasattr(signal, "SIGTERM"):
        # the console script: a termination cleans up like Ctrl-C (the old result stays)
        previous = signal.signal(signal.SIGTERM, _terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable
    _DROPPED_INTERRUPT.clear()
    try:
        n_threads = getattr(args, "threads", None)
        if n_threads is None:  # Numba is imported with the first kernel, after the first words
            return args.func(args)
        from .._threads import threads

        with threads(n_threads):
            return args.func(args)
    except _expected_errors() as exc:  # evaluated when an exception arrives
        if os.environ.get("FASTSCAPE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastscape: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastscape: interrupted; the previous result, if any, is untouched", file=sys.stderr)
        return _exit_interrupted(argv)
    except Exception as exc:
        # Ctrl-C while Numba unpickles or compiles a kernel can surface as another error: a
        # SystemError caused by the KeyboardInterrupt, or (when the interrupt was dropped in a
        # finalizer) a RuntimeError of the half-built kernel; the cleanup has run all the same
        if not (_interrupted(exc) or _DROPPED_INTERRUPT.is_set()):
            raise
        print("fastscape: interrupted; the previous result, if any, is untouched", file=sys.stderr)
        return _exit_interrupted(argv)
    finally:
        for timer in _REDELIVERIES:  # a re-delivery still pending must not outlive the job
            timer.cancel()
        _REDELIVERIES.clear()
        sys.unraisablehook = previous_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The errors reported in one line: bad input, files, a missing device (the device module
    only when it was imported: its error cannot have been raised otherwise)."""
    import zipfile

    errors = (CLIError, ValueError, TypeError, OSError, ImportError, zipfile.BadZipFile, EOFError)
    device = sys.modules.get("fastscape._device")
    return (*errors, device.DeviceUnavailableError) if device is not None else errors


#: Set when a Ctrl-C was dropped by Python (and delivered again).
_DROPPED_INTERRUPT = threading.Event()
#: The timers of those re-deliveries (cancelled when the job ends).
_REDELIVERIES: list[threading.Timer] = []


def _exit_interrupted(argv) -> int:
    """The exit status of an interrupted job; the console script also ignores any further
    Ctrl-C (a second press, or a re-delivery already under way) while Python shuts down, which
    would otherwise print a traceback from the thread pools' shutdown."""
    if argv is None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 130


def _unraisable(unraisable) -> None:
    """A Ctrl-C that lands while Python runs a finalizer or a callback is reported and dropped
    (``Exception ignored in ...``), and the job would go on: deliver it again, so that it
    interrupts the main thread's own code."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _DROPPED_INTERRUPT.set()
        # from another thread, a moment later: raised here it would be dropped again
        main = threading.main_thread().ident
        timer = threading.Timer(0.01, signal.pthread_kill, (main, signal.SIGINT))
        _REDELIVERIES.append(timer)
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a KeyboardInterrupt (directly or down its chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
