"""Cache of compiler outputs keyed by input digests + compiler version + options.

An entry is a folder ``<cache_dir>/<key>/`` holding the files one compiler run wrote
(``*_edgetpu.tflite``, ``*_edgetpu.log``) and its ``stdout.txt``. Entries are written to a
temporary folder and renamed into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

STDOUT_FILE = "stdout.txt"


def cache_key(input_digests: Sequence[str], compiler_version: str, args: Sequence[str]) -> str:
    """The key of a run: same models (in order), compiler and options -> same key."""
    payload = json.dumps({"inputs": list(input_digests), "compiler": compiler_version, "args": list(args)})
    return hashlib.sha256(payload.encode()).hexdigest()


class CompileCache:
    """Folder-per-key store of compiler outputs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def lookup(self, key: str) -> Optional[Path]:
        """The entry folder for ``key``, or None."""
        entry = self.root / key
        return entry if (entry / STDOUT_FILE).is_file() else None

    def store(self, key: str, files: Sequence[Path], stdout: str) -> Path:
        """Copy ``files`` and the run's stdout into the entry for ``key``; returns it."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            for f in files:
                shutil.copy2(f, tmp / Path(f).name)
            (tmp / STDOUT_FILE).write_text(stdout)
            entry = self.root / key
            if entry.exists():  # another run stored it first
                shutil.rmtree(tmp)
            else:
                tmp.rename(entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.root / key

    @staticmethod
    def restore(entry: Path, out_dir: Path) -> Dict[str, Path]:
        """Copy an entry's files into ``out_dir``; returns name -> restored path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        restored: Dict[str, Path] = {}
        for f in sorted(entry.iterdir()):
            if f.name != STDOUT_FILE:
                restored[f.name] = Path(shutil.copy2(f, out_dir / f.name))
        return restored

    @staticmethod
    def stdout(entry: Path) -> str:
        """The stored stdout of the run."""
        return (entry / STDOUT_FILE).read_text()

    def entries(self) -> List[Path]:
        """All complete entries."""
        return [p for p in self.root.glob("*") if (p / STDOUT_FILE).is_file()] if self.root.exists() else []
