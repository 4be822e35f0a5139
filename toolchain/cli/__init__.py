"""cli: the `toolchain` command. Entry: main()."""

from toolchain.cli.commands import main

__all__ = ["main"]
