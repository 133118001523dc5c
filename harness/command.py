"""How a stage (or a command like predict) runs: its command line, logging, the one-line
errors, signals, and outputs written all-or-none - the one place every stage and command goes
through (`run(main)` at the bottom of each stage script)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from harness import outputs, pins, signals
from harness.errors import StageError, describe_os_error, one_line
from nn import atomic
from nn.atomic import all_or_none

log = logging.getLogger(__name__)

class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported as the project's one `error:` line (exit 2)
    and the module docstring shown as written (its lists and examples keep their lines)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


class _Prefixed(logging.Formatter):
    """Every line of a log message starts with the command's name (`train: ...`), the lines of
    a multi-line message (the model's summary) too."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(f"{self.name}: {line}" for line in super().format(record).splitlines() or [""])


class _Preamble(logging.StreamHandler):
    """A stderr handler that says `first` (the bits the stage runs with) before the first log line:
    a stage that stops on bad params before logging anything prints its one `error:` line alone."""

    def __init__(self, stream, first: str) -> None:
        super().__init__(stream)
        self.first = first

    def emit(self, record: logging.LogRecord) -> None:
        if self.first is not None:
            first, self.first = self.first, None
            super().emit(logging.makeLogRecord({"name": record.name, "levelno": logging.INFO,
                                                "levelname": "INFO", "msg": first}))
        super().emit(record)


def command_name(module: dict) -> str:
    """'train' for the globals of stages.train, however it is run: `python -m stages.train`
    (its __name__ is then '__main__'), runpy, or `python stages/train.py`; 'predict' for a
    command package's predict/__main__.py (`python -m predict`)."""
    spec = module.get("__spec__")
    name = spec.name if spec is not None else module.get("__name__", "__main__")
    name = name.removesuffix(".__main__")
    if name == "__main__":
        path = Path(module.get("__file__") or "stage")
        name = path.parent.name if path.stem == "__main__" else path.stem
    return name.rpartition(".")[2]


def is_code(dep: str) -> bool:
    """Whether a dvc.yaml dependency is code (a module, or a room: a package folder), not data."""
    return dep.endswith(".py") or Path(dep, "__init__.py").is_file()


def _stage_epilog(name: str) -> str:
    """What --help says about a stage beyond its docstring: its params sections, inputs and
    outputs, from its entry in dvc.yaml (the one place they are declared)."""
    entry = outputs.spec(name)
    sections = list(dict.fromkeys(str(key).split(".")[0] for key in entry.get("params") or []))
    inputs = [str(dep) for dep in entry.get("deps") or [] if not is_code(str(dep))]
    made = [str(path) for path in outputs.declared(name)]
    settings = (f": its settings are the {' and '.join(sections)} section{'s' * (len(sections) > 1)} of params.yaml"
                if sections else "")
    said = [f"Takes no arguments{settings}."]
    if inputs:
        said.append(f"Reads {', '.join(inputs)}.")
    if made:
        said.append(f"Writes {', '.join(made)}.")
    if entry:
        said.append(f"Run it with `dvc repro {name}` (which first reruns the stages before it whose inputs "
                    f"changed) or `dvc repro` for the whole pipeline; `dvc params diff` shows which settings "
                    f"changed since the last commit.")
    else:
        said.append("Run it from the project's root, as `dvc repro` does.")
    text = re.sub(r"`[^`]*`", lambda code: code[0].replace(" ", "\0"), " ".join(said))  # a command stays whole
    return textwrap.fill(text, width=88).replace("\0", " ")


def _parse(module: dict, name: str, parser: argparse.ArgumentParser | None) -> argparse.Namespace:
    """The command line: `parser`'s arguments, or - for a stage - none but --help."""
    if parser is None:
        parser = Parser(prog=f"python -m stages.{name}", description=(module.get("__doc__") or "").strip(),
                        epilog=_stage_epilog(name))
    return parser.parse_args(sys.argv[1:])


def run(main: Callable[..., None], memory_hint: str = "", parser: argparse.ArgumentParser | None = None) -> None:
    """Run a stage's main(): log to stderr; expected errors -> one line, exit 1.

    The command line is read first: a stage takes no arguments but --help (its module
    docstring and what dvc.yaml says it reads and writes); a command with arguments
    passes its `parser` and gets main(args). A usage mistake is one `error:` line, exit
    2, and nothing runs. Each log line starts with the command's name (`train: ...`).

    Expected errors are StageError, ValueError (bad params, bad files: the nn
    loaders raise it), OSError (a disk or permission problem: the line names the
    file) and MemoryError (`memory_hint` says which params to lower). Anything else
    is a bug and keeps its traceback. SIGINT, SIGTERM and SIGHUP stop the stage
    cleanly, wherever they land (harness/signals.py): exit status 128 + the signal's
    number (130, 143, 129), until every output is in place; from then on they are
    ignored. Every output is written all-or-none (nn.atomic.all_or_none); under
    `dvc repro`, which deletes the outputs that are not `persist` before the run, a
    failed or stopped run puts the previous ones back (harness/outputs.py).
    """
    module = main.__globals__  # the stage module's namespace, even when runpy runs it
    name = command_name(module)
    args = _parse(module, name, parser)
    handler = _Preamble(sys.stderr, f"bits: {pins.describe()}")  # logged before the first line, if any
    handler.setFormatter(_Prefixed(name))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    stage = os.environ.get("DVC_STAGE", "")  # set by dvc for the command of the stage it runs
    signals.install()
    written = False
    try:
        atomic.check_stop()  # a stop during the imports (signals.early recorded it)
        if stage:
            signals.stop_with_dvc()
        if parser is None and (where := outputs.unwritable(name)):
            folder, out = where
            raise StageError(f"{folder}/: not writable, and {name} writes {out} there; make the folder writable "
                             f"(chmod u+w {folder}) and rerun - no output was changed")
        with all_or_none():
            if parser is None:
                main()
            else:
                main(args)
        written = True
        if signals.settle() is not None:  # a stop during the renames: the run does not count
            atomic.check_stop()
    except BaseException as exc:
        signals.ignore()
        stopped = atomic.stop_received()  # a stop comes first, whatever it raised (a worker's pipe closing, ...)
        expected = stopped is not None or isinstance(exc, (StageError, ValueError, OSError, MemoryError,
                                                           KeyboardInterrupt))
        bits, handler.first = handler.first, None  # not after the fact, before restore's lines or the error
        if bits and not expected:  # a bug: its report wants them
            print(f"{name}: {bits}", file=sys.stderr)
        if stage:
            outputs.restore(stage, log)
        if not expected:
            raise
        if stopped is not None or isinstance(exc, KeyboardInterrupt):
            changed = "; no output was changed" if stage or not written else "; its outputs were all written"
            if isinstance(exc, KeyboardInterrupt) and getattr(exc, "__notes__", None):
                changed = f"; {exc.__notes__[-1]}"  # a command's own word on what it kept (python -m sweep)
            message = f"interrupted ({atomic.signal_name(stopped or signal.SIGINT)}){changed}"
            status = signals.status(stopped)
        elif isinstance(exc, MemoryError):
            message, status = "out of memory" + (f"; {memory_hint}" if memory_hint else ""), 1
        elif isinstance(exc, OSError):
            message, status = one_line(describe_os_error(exc)), 1
        else:
            message, status = one_line(str(exc)) if str(exc) else type(exc).__name__, 1
        print(f"error: {message}", file=sys.stderr)
        sys.exit(status)
    if stage:
        outputs.keep(stage)
