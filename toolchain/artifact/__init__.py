"""artifact: the artifact directory on disk: atomic writes, locks, manifest updates. Entry: atomic_dir()."""

from toolchain.artifact.atomic import atomic_dir, write_json
from toolchain.artifact.manifest_writes import add_variant, update_manifest

__all__ = ["add_variant", "atomic_dir", "update_manifest", "write_json"]
