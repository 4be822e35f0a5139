"""cli: the `toolchain` command. Entry: main().

parser.py (the argument table and --help examples), commands.py (COMMANDS: one thin function per
command, and main() with its one-sentence errors), render.py (everything printed: PRINTERS per task
for `toolchain run`, `toolchain info`, the stages' summaries).
"""

from toolchain.cli.commands import main

__all__ = ["main"]
