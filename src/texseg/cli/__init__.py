"""The ``texseg`` command line: a thin layer over the library.

Options of ``texseg train`` are generated from :class:`TrainConfig`'s fields (name, type,
help), so the CLI, config files and the Python API cannot drift apart. Every error a
user can cause ends as one line on stderr and a non-zero exit code, never a traceback.
Commands live in their own modules and register on the :data:`cli` group.

:func:`main` takes over the stop signals *before* importing the commands (and so torch):
a Ctrl-C at any moment is recorded and honoured at the next safe point. Before that it sets
the OpenMP wait policy (:func:`texseg.threads.configure_threads`), which torch reads once,
when it loads: a busy machine must not stall texseg's threads.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Sequence

import click

from texseg import signals, threads
from texseg.errors import ExitCode, TexsegError

# Modules that register commands on `cli` when imported (after the signal handlers are in place).
COMMAND_MODULES = ("commands", "experiments", "search", "predict", "benchmark", "report", "general", "export")


class UserError(click.ClickException):
    """A library error, reworded for the command line (field names become the flags that set them)."""

    exit_code = ExitCode.USAGE


def _flag_names(ctx: click.Context) -> dict[str, str]:
    """Parameter name -> its flag (``time_budget`` -> ``--time-budget``) for a command's options."""
    flags = {p.name: max(p.opts, key=len) for p in ctx.command.params
             if isinstance(p, click.Option) and p.name and p.opts}
    flags.update({p.name: p.human_readable_name for p in ctx.command.params
                  if isinstance(p, click.Argument) and p.name})
    return flags


def as_cli_message(message: str, flags: dict[str, str]) -> str:
    """The one place where the library's field names become flags.

    The library names the field a message is about first (``lr must be ...``) and quotes
    any other field it mentions in backticks (```storage```); both become the flag of the
    command that sets them, when it has one.
    """
    head = re.match(r"([a-z][a-z0-9_]*)(\[\d+\])?(?=[ :])", message)
    if head and head.group(1) in flags:
        message = flags[head.group(1)] + message[len(head.group(1)):]
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flags.get(m.group(1), m.group(1)), message)


class TexsegCommand(click.Command):
    """A command whose library errors name its flags (see :func:`as_cli_message`)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ValueError, TexsegError) as e:
            raise UserError(as_cli_message(str(e), _flag_names(ctx))) from None


class TexsegGroup(click.Group):
    """A group whose commands and subgroups are :class:`TexsegCommand` / :class:`TexsegGroup`."""

    command_class = TexsegCommand
    group_class = type  # subgroups are TexsegGroups too


@click.group(cls=TexsegGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="texseg")
def cli() -> None:
    """texseg: neural segmentation of controllable synthetic textures.

    Typical session: `texseg generate` to look at the data, `texseg train` to train
    the default model for 30 s, `texseg eval RUN_DIR` to measure it again.
    """


def load_commands() -> click.Group:
    """Import every command module (registering its commands) and return the group."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"texseg.cli.{name}")
    return cli


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI, turning every error into one line and an exit code."""
    if "torch" not in sys.modules:  # in-process callers that already loaded torch: too late, and theirs
        threads.configure_threads()
    signals.install()  # first: a signal during the imports below is recorded, not lost
    try:
        _run(argv)
    finally:
        if argv is not None:  # called in-process (tests, notebooks): give the signals back
            signals.uninstall()


def _run(argv: Sequence[str] | None) -> None:
    try:
        load_commands()
        signals.stop_point()  # a Ctrl-C during start-up: nothing has been written yet
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="texseg", standalone_mode=False)
        signals.stop_point()  # a signal no loop acted on: the command's own work is done and saved
    except signals.Interrupted as e:
        _fail(f"texseg: interrupted by {e}", ExitCode.INTERRUPTED)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("texseg: interrupted", ExitCode.INTERRUPTED)
    except click.ClickException as e:
        _fail(f"texseg: error: {e.format_message()}", e.exit_code)
    except (ValueError, TexsegError) as e:
        _fail(f"texseg: error: {e}", ExitCode.USAGE)
    except OSError as e:  # a path that cannot be read or written, a full disk
        _fail(f"texseg: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), ExitCode.USAGE)
    except RecursionError:  # e.g. absurdly nested JSON in a file the user gave
        _fail("texseg: error: input nested too deeply to read", ExitCode.USAGE)
    except Exception as e:  # a bug: still one line, with a way to see more
        if os.environ.get("TEXSEG_DEBUG"):
            raise
        _fail(f"texseg: internal error: {type(e).__name__}: {e} (set TEXSEG_DEBUG=1 for the traceback)",
              ExitCode.INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
