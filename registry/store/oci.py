"""A store in any OCI registry (Docker Hub, GHCR, Harbor, ECR, a distribution registry).

A release ``name:version`` is an OCI artifact in repository ``<repo>/<name>`` tagged
``<version>``; its layers are ``release.json`` and the files it lists, each titled
with its file name (so a blob's digest is the file's sha256). Channels are the tags
``canary`` and ``stable``; a yanked version gets the tag ``yanked-<version>`` and loses
its channels. Uploads go through ``oras`` (the ``registry`` extra, imported
lazily); reads use the same HTTP client as devices (:class:`release_contract.fetch.OciSource`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping

from registry.store.base import CHANNELS, Store, sort_versions
from release_contract.errors import AlreadyExists, NotFound, RegistryError, StoreError
from release_contract.manifest import ENVELOPE_NAME, check_filename, check_name, check_version
from release_contract.stores import OciSource, parse_oci_url

log = logging.getLogger(__name__)

YANK_PREFIX = "yanked-"
VERSION_ANNOTATION = "org.opencontainers.image.version"


class OciStore(Store):
    """Releases as OCI artifacts; see the module docstring for the mapping."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.base, self.repo = parse_oci_url(url)
        self.host = self.base.split("://", 1)[1]
        self.insecure = self.base.startswith("http://")
        self.timeout = timeout
        self._reader = OciSource(url, timeout=timeout)
        self._client: Any = None

    # -- plumbing -------------------------------------------------------------------------------------
    def _oras(self) -> Any:
        if self._client is None:
            self._check_reachable()
            try:
                import oras.provider
            except ImportError as exc:
                raise StoreError(
                    "the OCI store needs the registry extra: pip install 'edgetpu-fleet[registry]'"
                ) from exc
            self._client = oras.provider.Registry(hostname=self.host, insecure=self.insecure)
        return self._client

    def _check_reachable(self) -> None:
        # oras retries a dead host for minutes; fail fast with one clear line instead.
        try:
            urllib.request.urlopen(f"{self.base}/v2/", timeout=min(self.timeout, 5.0)).close()  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise StoreError(f"{self.base} does not look like an OCI registry (HTTP {exc.code})") from exc
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"cannot reach the registry at {self.base}: {reason}") from exc

    def _target(self, name: str, tag: str = "") -> str:
        ref = f"{self.host}/{self.repo}/{check_name(name)}"
        return f"{ref}:{tag}" if tag else ref

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        client = self._oras()
        try:
            return fn(client, *args, **kwargs)
        except RegistryError:
            raise
        except Exception as exc:  # oras raises ValueError/RuntimeError/requests errors; map them here
            text = " ".join(str(exc).split())[:300]
            if "404" in text or "NAME_UNKNOWN" in text or "MANIFEST_UNKNOWN" in text or "Not Found" in text:
                raise NotFound(f"{what}: not found in {self.url}") from exc
            raise StoreError(f"{what} failed on {self.url}: {text}") from exc

    def _tags(self, name: str) -> List[str]:
        def get(client: Any) -> List[str]:
            resp = client.do_request(f"{self.base}/v2/{self.repo}/{check_name(name)}/tags/list", "GET")
            if resp.status_code == 404:
                raise NotFound(f"no release named {name!r} in {self.url}")
            client._check_200_response(resp)
            return list(resp.json().get("tags") or [])

        return list(self._call(f"listing {name}", get))

    def _manifest(self, name: str, tag: str) -> Dict[str, Any]:
        manifest = self._call(f"{name}:{tag}", lambda c: c.get_manifest(self._target(name, tag)))
        if not isinstance(manifest, dict):
            raise StoreError(f"{name}:{tag} on {self.url} has a malformed OCI manifest")
        return manifest

    def _retag(self, name: str, version: str, tag: str) -> None:
        import oras.container

        manifest = self._manifest(name, version)
        container = oras.container.Container(self._target(name, tag), registry=self.host)
        self._call(
            f"tagging {name}:{version} as {tag}",
            lambda c: c._check_200_response(c.upload_manifest(manifest, container)),
        )

    # -- Store interface -------------------------------------------------------------------------------
    def push(self, envelope: bytes, files: Mapping[str, Path], name: str, version: str) -> None:
        check_version(version)
        try:
            tags = self._tags(name)
        except NotFound:
            tags = []
        if version in tags:
            raise AlreadyExists(
                f"{name}:{version} already exists in {self.url}: versions are immutable, push a higher version"
            )
        staging = Path(tempfile.mkdtemp(prefix="edge-registry-push-"))
        try:
            paths = []
            for fname, src in files.items():
                dest = staging / check_filename(fname)
                shutil.copyfile(src, dest)
                paths.append(str(dest))
            (staging / ENVELOPE_NAME).write_bytes(envelope)
            paths.insert(0, str(staging / ENVELOPE_NAME))
            self._call(
                f"pushing {name}:{version}",
                lambda c: c.push(
                    target=self._target(name, version),
                    files=paths,
                    disable_path_validation=True,
                    manifest_annotations={VERSION_ANNOTATION: version},
                    quiet=True,
                ),
            )
        except FileNotFoundError as exc:
            raise StoreError(f"file not found: {exc.filename}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def names(self) -> List[str]:
        def get(client: Any) -> List[str]:
            repos: List[str] = []
            last = ""
            while True:  # paginated: at most 1000 names a page
                query = urllib.parse.urlencode({"n": 1000, **({"last": last} if last else {})})
                resp = client.do_request(f"{self.base}/v2/_catalog?{query}", "GET")
                client._check_200_response(resp)
                page = list(resp.json().get("repositories") or [])
                repos += page
                if len(page) < 1000:
                    return repos
                last = page[-1]

        prefix = f"{self.repo}/"
        return sorted(
            r[len(prefix) :]
            for r in self._call("listing the catalog", get)
            if r.startswith(prefix) and "/" not in r[len(prefix) :]
        )

    def versions(self, name: str) -> List[str]:
        return sort_versions(self._tags(name))

    def envelope(self, name: str, version: str) -> bytes:
        return self._reader.fetch_envelope(name, check_version(version))

    def channels(self, name: str) -> Dict[str, str]:
        # Deleting a tag in the distribution API deletes the manifest and all its tags, so a
        # channel still tagged on a yanked version is hidden here instead of untagged.
        out: Dict[str, str] = {}
        tags = self._tags(name)
        yanked = {t[len(YANK_PREFIX) :] for t in tags if t.startswith(YANK_PREFIX)}
        for tag in set(tags) & set(CHANNELS):
            annotations = self._manifest(name, tag).get("annotations")
            version = annotations.get(VERSION_ANNOTATION) if isinstance(annotations, dict) else None
            if isinstance(version, str) and version not in yanked:
                out[tag] = str(version)
        return out

    def set_channel(self, name: str, version: str, channel: str) -> None:
        if channel not in CHANNELS:
            raise StoreError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
        if version not in self.versions(name):
            raise NotFound(f"{name}:{version} is not in {self.url}")
        if version in self.yanked(name):
            raise StoreError(f"{name}:{version} is yanked and cannot be promoted")
        self._retag(name, version, channel)

    def yanked(self, name: str) -> List[str]:
        return sort_versions([t[len(YANK_PREFIX) :] for t in self._tags(name) if t.startswith(YANK_PREFIX)])

    def yank(self, name: str, version: str) -> None:
        if version not in self.versions(name):
            raise NotFound(f"{name}:{version} is not in {self.url}")
        self._retag(name, version, YANK_PREFIX + version)
