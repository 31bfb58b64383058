"""The ``voxbox`` command line (typer + rich).

Core commands live in this package (``speak``, ``transcribe``, ``engines``); each other area adds
its commands through a ``register(app)`` function in its own ``cli`` module (``voxbox.server.cli``
adds ``serve``, ``voxbox.hardware.cli`` ``doctor``, ``voxbox.bench.cli`` ``bench``,
``voxbox.convert.cli`` ``convert``). Modules imported for ``--help`` import nothing heavy.

Errors print one line to stderr and exit non-zero; ``--debug`` (anywhere on the line) shows the
traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import typer

from voxbox import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="voxbox",
    help="Local text-to-speech and speech-to-text that runs fast on the hardware you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_AREA_CLIS = ("voxbox.cli.speak", "voxbox.cli.transcribe", "voxbox.cli.engines", "voxbox.server.cli",
              "voxbox.hardware.cli", "voxbox.bench.cli", "voxbox.convert.cli", "voxbox.batch.cli",
              "voxbox.wyoming.cli")


def _version(value: bool) -> None:
    if value:
        print(f"voxbox {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (may go anywhere on the line)."),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """Local text-to-speech and speech-to-text that runs fast on the hardware you have."""


def _register_areas() -> None:
    for name in _AREA_CLIS:
        importlib.import_module(name).register(app)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's (typer's vendored click's) usage errors: they carry a message and an exit code."""
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code")


def _usage_error(exc: BaseException) -> str:
    msg = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    where = f"voxbox {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "voxbox --help"
    return f"{msg.rstrip('.')} (see '{where}')"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning every error into one line + exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    from voxbox.engines.compile_cache import persist_bytecode_cache

    persist_bytecode_cache()  # before anything imports torch (a no-op where it has bytecode)
    _register_areas()
    try:
        rc = app(args=args, standalone_mode=False, prog_name="voxbox")  # typer.Exit(code) is returned here
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException as exc:  # noqa: BLE001 - the one place errors become one line
        from voxbox.errors import VoxboxError

        if isinstance(exc, typer.Exit):
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, typer.Abort):
            print("error: aborted", file=sys.stderr)
            raise SystemExit(1) from None
        if _is_usage_error(exc):
            print(f"error: {_usage_error(exc)}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        if debug:
            raise
        if isinstance(exc, VoxboxError):
            print(f"error: {exc}", file=sys.stderr)
        elif isinstance(exc, OSError):
            detail = exc.strerror or str(exc)
            print(f"error: {detail}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        else:
            print(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                  f"(run with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
