"""The model registry: ``Registry`` keeps ``<root>/<name>/<version>/`` (versions ``v1``, ``v2``,
...) and movable aliases such as ``latest`` under ``<root>/<name>/aliases/``.

Claiming a version number. ``register`` claims ``vN`` before it uploads anything there, in two steps:

1. a conditional write of ``vN/.claim`` (``If-None-Match: *`` on S3, ``O_EXCL`` locally): where the store
   honours it, of two writers exactly one gets past this, the other takes the next number;
2. a token of this writer's own, ``vN/.claim-<uuid>``, then a listing of ``vN/``: the number is kept only
   where the folder holds nothing but ``.claim`` and this token; otherwise the token is deleted and the
   writer takes the next number.

Step 2 is for S3-compatibles that ignore ``If-None-Match`` and overwrite silently (both writers "win"
step 1). Reading ``.claim`` back would not do: the loser's overwrite may land after the winner has read
its own token. Tokens are never overwritten (unique names) and a winner's token stays until its files
are there, so of two writers that both kept ``vN`` the later one's listing would have shown the earlier
one's token: at most one keeps it (with a store whose listings show every completed write, as S3,
GCS and SeaweedFS do). Under contention on such a store both may give a number up: it stays claimed and
unused, like one of a writer that died. After publishing, the winner deletes its token.

The top of the package: imports ``inkbooth.storage`` and, of this package, ``manifests``,
``reading`` and ``publishing``.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from inkbooth import storage
from inkbooth.artifacts.manifests import CLAIM, MANIFEST, Manifest, NotPublishedError, content_hash, scan_dir
from inkbooth.artifacts.publishing import publish
from inkbooth.artifacts.reading import is_published, read_manifest

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class Registry:
    """Versioned models under ``<root>/<name>/<version>/`` with movable aliases."""

    def __init__(self, root: str) -> None:
        self.root = root

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} must be 1-63 chars of a-z, 0-9, '.', '_', '-'")
        return name

    def uri(self, name: str, version: str) -> str:
        return storage.join(self.root, self.check_name(name), version)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        found = set()
        for rel in storage.list_files(storage.join(self.root, self.check_name(name))):
            parts = rel.split("/")
            if len(parts) == 2 and parts[1] == MANIFEST and _VERSION.match(parts[0]):
                found.add(parts[0])
        return sorted(found, key=lambda v: int(v[1:]))

    def _highest_number(self, name: str) -> int:
        numbers = [0]
        for rel in storage.list_files(storage.join(self.root, self.check_name(name))):
            m = _VERSION.match(rel.split("/")[0])
            if m:
                numbers.append(int(m.group(1)))
        return max(numbers)

    def resolve(self, name: str, ref: str = "latest") -> str:
        """A version name for ``ref`` (a version such as ``v3``, or an alias such as ``latest``)."""
        if _VERSION.match(ref):
            if not is_published(self.uri(name, ref)):
                raise NotPublishedError(f"model {name} has no version {ref}")
            return ref
        storage.check_part(ref, "alias")
        try:
            alias = json.loads(storage.read_text(storage.join(self.root, self.check_name(name), "aliases", f"{ref}.json")))
        except storage.NotFoundError:
            raise NotPublishedError(f"model {name} has no alias {ref!r}") from None
        return alias["version"]

    def manifest(self, name: str, ref: str = "latest") -> Manifest:
        return read_manifest(self.uri(name, self.resolve(name, ref)))

    @staticmethod
    def check_alias(alias: str) -> str:
        """An alias is a name like a model's (no '/', '..', ...) that does not look like a version."""
        if _VERSION.match(alias):
            raise ValueError(f"alias {alias!r} looks like a version")
        if not _NAME.match(alias):
            raise ValueError(f"alias {alias!r} must be 1-63 chars of a-z, 0-9, '.', '_', '-' (e.g. latest, prod)")
        return alias

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.check_alias(alias)
        if not is_published(self.uri(name, version)):
            raise NotPublishedError(f"model {name} has no version {version}")
        storage.write_text(storage.join(self.root, name, "aliases", f"{alias}.json"),
                           json.dumps({"version": version}) + "\n")

    def register(self, name: str, local_dir: str | Path, *, kind: str, alias: str | None = "latest",
                 **manifest_fields: Any) -> tuple[str, Manifest]:
        """Publish ``local_dir`` as the next version of ``name`` and move ``alias`` to it.

        Identical content to an existing version is not published twice: that version is returned.
        Two writers racing for one version number cannot both win (see the module docstring, also
        for stores that ignore conditional writes), the loser takes the next number.
        """
        if alias:
            self.check_alias(alias)  # before anything is published
        files = scan_dir(local_dir)
        digest = content_hash(files)
        for v in reversed(self.versions(name)):
            m = read_manifest(self.uri(name, v))
            if m.content_hash == digest:
                if alias:
                    self.set_alias(name, alias, v)
                return v, m
        # A version number is claimed (a no-overwrite write) before anything is uploaded under it,
        # so two writers never upload into the same folder; a claimed number is never reused.
        number = self._highest_number(name) + 1
        for _ in range(50):
            version = f"v{number}"
            token = self._claim(self.uri(name, version))
            if token is None:
                number += 1
                continue
            m = publish(local_dir, self.uri(name, version), kind=kind, name=name, version=version,
                        **manifest_fields)
            storage.delete(storage.join(self.uri(name, version), token))  # its files hold the number now
            if alias:
                self.set_alias(name, alias, version)
            return version, m
        raise storage.StorageError(f"model {name}: could not claim a new version number")

    @staticmethod
    def _claim(version_uri: str) -> str | None:
        """Claim the version folder ``version_uri`` (see the module docstring): this writer's token
        file name, or None where another writer has the number."""
        token = f"{CLAIM}-{uuid.uuid4().hex}"
        try:
            storage.write_text(storage.join(version_uri, CLAIM), token + "\n", if_absent=True)
        except storage.AlreadyExistsError:
            return None
        storage.write_text(storage.join(version_uri, token), "")
        if any(rel not in (CLAIM, token) for rel in storage.list_files(version_uri)):
            storage.delete(storage.join(version_uri, token))
            return None
        return token
