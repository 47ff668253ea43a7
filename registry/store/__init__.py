"""Release stores behind one interface: a local directory or an OCI registry.

Use :func:`open_store` with a path or ``oci://host[:port]/repo``.
"""

from __future__ import annotations

from registry.store.base import ReleaseInfo, Store, open_store

__all__ = ["ReleaseInfo", "Store", "open_store"]
