"""Files shipped inside the package, so that an installed toolchain (``pip install .``, no checkout) works.

What ``toolchain quantize`` / ``validate`` / ``bench`` read when given no data (``SST2_DEV``) and what
``toolchain demo`` builds when no artifact exists (``MINILM_RECIPE``). In a checkout, ``models/`` stays
the recipes' home: these are copies of the files named in ``CHECKOUT_COPIES``, and a test
(tests/test_install.py) fails when a copy and its original differ. Source and licence: README.md here.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2_DEV = HERE / "sst2-dev.tsv"  # GLUE SST-2 dev split, 872 rows, header label<TAB>content
MINILM_RECIPE = HERE / "minilm.toml"  # the default recipe: all-MiniLM-L6-v2 exported as is

# packaged file -> its original, relative to the repository root
CHECKOUT_COPIES = {SST2_DEV: "models/data/sst2/dev.tsv", MINILM_RECIPE: "models/minilm.toml"}

__all__ = ["CHECKOUT_COPIES", "MINILM_RECIPE", "SST2_DEV"]
