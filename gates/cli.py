"""The `embedgate` command line. Commands are thin: they parse options, call a library function that returns
a typed result, print it, and pick the exit code (0 ok, 1 a gate failed / promotion blocked, 2 an error).

    embedgate --help
    embedgate validate path/to/beir-folder     # a BEIR folder, e.g. SciFact
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

# Each module in gates/commands registers its commands; the order here is the order in `--help`.
COMMAND_MODULES = (
    "validate",
    "mine",
    "train",
    "export",
    "evaluate",
    "registry",
    "embed",
    "pipeline",
    "report",
    "cache",
    "serve",
    "drift",
    "dashboard",
)

app = typer.Typer(
    name="embedgate",
    help="Turn a general sentence-embedding model into a gated, served domain model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@app.callback()
def _root() -> None:
    """Turn a general sentence-embedding model into a gated, served domain model."""
    # An explicit callback keeps `embedgate validate ...` a subcommand: with one registered command and no
    # callback, Typer would run that command as the whole program and reject the word "validate".


def _register_commands() -> None:
    if app.registered_commands:  # once per process: main() runs many times in one test session
        return
    for name in COMMAND_MODULES:
        importlib.import_module(f"gates.commands.{name}").register(app)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Error bases whose message is meant for the user: print one line, exit 2, no traceback."""
    from gates.errors import EmbedgateGateError
    from service.errors import EmbedgateServiceError
    from training.errors import EmbedgateTrainingError

    return (EmbedgateTrainingError, EmbedgateGateError, EmbedgateServiceError)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register_commands()
    try:
        result = app(args=argv, standalone_mode=False)
    except user_error_types() as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as err:  # usage errors arrive as ClickException subclasses
        import click

        # Typer 0.29 vendors click as typer._click: its ClickException is a TyperException, not click's.
        if isinstance(err, (click.ClickException, typer.TyperException)) and callable(
            getattr(err, "show", None)
        ):
            err.show()
            return 2
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
