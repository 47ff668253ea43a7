"""Release stores behind one interface: a local directory or an OCI registry.

Use :func:`open_store` with a path or ``oci://host[:port]/repo``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from registry.store.base import ReleaseInfo, Store
from registry.store.local import LocalStore
from release_contract.credentials import Login
from release_contract.stores import store_kind

__all__ = ["ReleaseInfo", "Store", "open_store"]


def open_store(url: Optional[str] = None, login: Optional[Login] = None) -> Store:
    """The store at ``url`` (a path or ``oci://host[:port]/repo``).

    ``None`` means ``$EDGE_REGISTRY``, else ``./registry``. ``login`` gives the registry
    credentials of an OCI store (see :mod:`release_contract.credentials`).
    """
    kind, location = store_kind(url or os.environ.get("EDGE_REGISTRY") or "./registry")
    if kind == "oci":
        from registry.store.oci import OciStore

        return OciStore(location, login=login)
    return LocalStore(Path(location))
