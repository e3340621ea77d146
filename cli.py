"""Command-line interface: maps flags onto the config dataclasses of gptoss/, data_pipeline/ and orchestrator/."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train and sweep nano GPT-OSS vs GPT-2 on TinyStories with Ray.",
)

DEFAULT_DATA = "data/tinystories"


def _user_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(2)
        except RuntimeError as exc:
            # ClusterError and friends: our own one-line runtime failures.
            if type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] in ("orchestrator", "data_pipeline", "gptoss"):
                typer.echo(f"error: {_one_line(exc)}", err=True)
                raise typer.Exit(2)
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


@app.command()
def version():
    """Print the versions of this project, torch and ray."""
    from importlib.metadata import PackageNotFoundError, version as pkg_version

    def v(name: str) -> str:
        try:
            return pkg_version(name)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"nano-gpt-oss {v('nano-gpt-oss')}")
    typer.echo(f"torch {v('torch')}")
    typer.echo(f"ray {v('ray')}")


if __name__ == "__main__":
    app()
