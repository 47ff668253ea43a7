"""TF Hub and Kaggle Models references for ``edge-compile quantize``.

A SOURCE that is not a path on disk may be

* a Kaggle Models handle ``owner/model/framework/variation[/version]``, or its URL
  ``https://www.kaggle.com/models/owner/model/framework/variation[/version]``: downloaded and
  cached by ``kagglehub`` (the ``compiler`` extra; cache in ``$KAGGLEHUB_CACHE``, default
  ``~/.cache/kagglehub``);
* a ``https://tfhub.dev/...`` URL (TF Hub's models now live on Kaggle): resolved by
  ``tensorflow_hub`` when it is importable (cache in ``$TFHUB_CACHE_DIR``).

Either way the result is a SavedModel folder, which :mod:`compiler.quantize` loads as any
other (a ``serving_default`` signature, or a TF Hub ``__call__``). Offline, with nothing
cached, the download fails with one :class:`~compiler.errors.ModelSourceError` line.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from compiler.errors import ModelSourceError

log = logging.getLogger(__name__)

_KAGGLE_URL = re.compile(r"^https?://(www\.)?kaggle\.com/models/(?P<handle>[^?#]+?)/?$")
_HANDLE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/\d+)?$")
_TFHUB_URL = re.compile(r"^https?://tfhub\.dev/\S+$")


def kaggle_handle(source: str) -> Optional[str]:
    """The Kaggle Models handle ``source`` names (a handle or a kaggle.com/models URL), else None."""
    match = _KAGGLE_URL.match(source)
    handle = match.group("handle") if match else source
    return handle if _HANDLE.match(handle) else None


def is_hub_reference(source: str) -> bool:
    """Whether ``source`` is a TF Hub URL or a Kaggle Models handle or URL (rather than a file)."""
    return bool(_TFHUB_URL.match(source)) or kaggle_handle(source) is not None


def resolve(source: str) -> Path:
    """Download (or find in the cache) the SavedModel ``source`` names and return its folder.

    Raises:
        ModelSourceError: not a hub reference, the library for it is missing, the download failed
            (no network, unknown model), or what came down holds no SavedModel.
    """
    handle = kaggle_handle(source)
    if handle is not None:
        folder = _kagglehub(handle)
    elif _TFHUB_URL.match(source):
        folder = _tensorflow_hub(source)
    else:
        raise ModelSourceError(f"{source} is neither a file, a TF Hub URL nor a Kaggle Models handle")
    return saved_model_folder(folder, source)


def saved_model_folder(folder: Path, source: str) -> Path:
    """``folder`` if it holds ``saved_model.pb``, else its only sub-folder that does."""
    if (folder / "saved_model.pb").is_file():
        return folder
    found = sorted(p.parent for p in folder.glob("*/saved_model.pb"))
    if len(found) == 1:
        return found[0]
    raise ModelSourceError(f"{source} downloaded to {folder}, which holds no TensorFlow SavedModel")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _kagglehub(handle: str) -> Path:
    try:
        import kagglehub
    except ImportError as exc:
        raise ModelSourceError(
            f"{handle} is a Kaggle Models handle: install kagglehub (pip install 'edgetpu-fleet[compiler]')"
        ) from exc
    log.info("fetching %s with kagglehub (cached after the first download)", handle)
    try:
        return Path(kagglehub.model_download(handle))
    except Exception as exc:  # kagglehub raises requests and its own errors: one line for all
        raise ModelSourceError(
            f"cannot download {handle} from Kaggle Models ({_first_line(exc)}); offline, give a SavedModel "
            "folder already on disk"
        ) from exc


def _tensorflow_hub(url: str) -> Path:
    try:
        import tensorflow_hub
    except ImportError as exc:
        raise ModelSourceError(
            f"{url} is a tfhub.dev URL: install tensorflow_hub to resolve it, or give the model's Kaggle "
            "Models handle (owner/model/framework/variation/version)"
        ) from exc
    try:
        return Path(tensorflow_hub.resolve(url))
    except Exception as exc:  # tensorflow_hub raises urllib, TF and its own errors
        raise ModelSourceError(
            f"cannot download {url} ({_first_line(exc)}); offline, give a SavedModel folder already on disk"
        ) from exc
