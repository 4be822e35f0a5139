"""The Gradio demo as a script: python demos/app.py [DIR ...] [--host 127.0.0.1] [--port N].

The same as `toolchain demo` (the app is toolchain/serve/); with no DIR it serves dist/minilm,
building it first if it is missing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from toolchain.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
