"""The ``voxbox`` command line (typer + rich).

Core commands (speak, transcribe, engines) live here; each other area contributes its commands
through a ``register(app)`` function in its own ``cli`` module (``voxbox.server.cli`` adds
``serve``, ``voxbox.hardware.cli`` adds ``doctor``, ``voxbox.bench.cli`` adds ``bench``,
``voxbox.convert.cli`` adds ``convert``), imported at start-up but free of heavy imports.

Errors print one line to stderr and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="voxbox",
    help="Local text-to-speech and speech-to-text that runs fast on the hardware you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}

_AREA_CLIS = ("voxbox.server.cli", "voxbox.hardware.cli", "voxbox.bench.cli", "voxbox.convert.cli")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


def _register_areas() -> None:
    for name in _AREA_CLIS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # area not built yet
            raise
        mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning VoxboxError into one line + exit 1."""
    from voxbox.errors import VoxboxError

    _register_areas()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except VoxboxError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and unexpected failures: still one line
        import click

        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Abort):
            print("error: aborted", file=sys.stderr)
            raise SystemExit(1) from None
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
