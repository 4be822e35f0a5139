import sys

from toolchain.cli.commands import main

sys.exit(main())
