"""The ``texseg`` command line: a thin layer over the library.

Options of ``texseg train`` are generated from :class:`TrainConfig`'s fields (name, type,
help), so the CLI, config files and the Python API cannot drift apart. Every error a
user can cause ends as one line on stderr and a non-zero exit code, never a traceback.
Commands live in their own modules and register on the :data:`cli` group.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from texseg.cli._options import EXIT_INTERRUPTED, EXIT_USAGE
from texseg.errors import TexsegError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="texseg")
def cli() -> None:
    """texseg: neural segmentation of controllable synthetic textures.

    Typical session: `texseg generate` to look at the data, `texseg train` to train
    the default model for 30 s, `texseg eval RUN_DIR` to measure it again.
    """


from texseg.cli import benchmark  # noqa: E402,F401  (registers benchmark, segmenters, suites)
from texseg.cli import commands  # noqa: E402,F401  (registers the commands)
from texseg.cli import experiments  # noqa: E402,F401  (registers the experiment commands)
from texseg.cli import search  # noqa: E402,F401


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI, turning every error into one line and an exit code."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="texseg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("texseg: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        click.echo(f"texseg: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (ValueError, TexsegError) as e:
        click.echo(f"texseg: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:  # a path the user gave cannot be read or written
        click.echo(f"texseg: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("texseg: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a bug: still one line, with a way to see more
        if os.environ.get("TEXSEG_DEBUG"):
            raise
        click.echo(f"texseg: internal error: {type(e).__name__}: {e} (set TEXSEG_DEBUG=1 for the traceback)",
                   err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)

