"""data: reading evaluation, calibration and training text (torch-free). Entry: read_texts()."""

from toolchain.data.texts import TextSet, read_split, read_texts

__all__ = ["TextSet", "read_split", "read_texts"]
