"""artifact: the artifact directory on disk: atomic writes, locks, manifest updates. Entry: atomic_dir()."""

from toolchain.artifact.atomic import add_variant, atomic_dir, update_manifest, write_json

__all__ = ["add_variant", "atomic_dir", "update_manifest", "write_json"]
