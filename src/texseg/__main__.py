"""``python -m texseg`` (and ``torchrun ... -m texseg train ...``): the ``texseg`` command."""

from texseg.cli import main

main()
