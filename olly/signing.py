"""Signed remote cache: a registry's content tag counts as a cache hit only if signed.

Anyone who can push to a shared registry can put an image under a content tag
(``olly-<hash>``) with a matching ``dev.olly.key`` label: the tag names the key, not
who built it. With a signing key (``OLLY_SIGNING_KEY``, or the file named by
``OLLY_SIGNING_KEY_FILE``), every image olly pushes under a content tag gets an
HMAC-SHA256 over (repository, key, manifest digest), stored next to it in the
registry as a tiny OCI artifact tagged ``sha256-<digest hex>.olly`` (cosign's naming
idea). A remote hit is used only if that signature verifies; otherwise the target is
built. Only machines that hold the key (e.g. main's CI jobs, never pull requests)
can make an entry others will trust.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from olly.errors import OllyError
from olly.registry import RegistryClient

ENV_KEY = "OLLY_SIGNING_KEY"
ENV_KEY_FILE = "OLLY_SIGNING_KEY_FILE"
SIGNATURE_TYPE = "application/vnd.dev.olly.signature.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_ANNOTATION = "dev.olly.signature"
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class Signer:
    secret: bytes

    def mac(self, repository: str, key: str, digest: str) -> str:
        payload = f"olly-signature-v1\n{repository}\n{key}\n{digest}\n".encode()
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()


def signer_from_env() -> Signer | None:
    """The signing key of this machine, or None (remote hits then trust verified digests only)."""
    value = os.environ.get(ENV_KEY)
    if value is None and os.environ.get(ENV_KEY_FILE):
        path = Path(os.environ[ENV_KEY_FILE]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OllyError("signing-key-invalid", f"{ENV_KEY_FILE}={path}: cannot read: {exc.strerror}")
    if value is None:
        return None
    if len(value.encode()) < MIN_KEY_BYTES:
        raise OllyError("signing-key-invalid", f"the signing key must be at least {MIN_KEY_BYTES} bytes "
                        "(e.g. `openssl rand -hex 32`)")
    return Signer(value.encode())


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".olly"


def _empty() -> tuple[bytes, dict[str, object]]:
    data = b"{}"
    return data, {"mediaType": EMPTY_TYPE, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}


def sign(client: RegistryClient, signer: Signer, repository: str, key: str, digest: str) -> None:
    """Store the signature of ``repository@digest`` as the build of ``key``."""
    data, empty = _empty()
    client.push_blob(repository, data)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": SIGNATURE_TYPE,
        "config": empty, "layers": [empty],
        "annotations": {_ANNOTATION: json.dumps({"key": key, "digest": digest,
                                                 "hmac": signer.mac(repository, key, digest)}, sort_keys=True)},
    }
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    client.push_manifest(repository, signature_tag(digest), body, MANIFEST_TYPE)


def verify(client: RegistryClient, signer: Signer, repository: str, key: str, digest: str) -> str | None:
    """None if ``repository@digest`` carries a valid signature for ``key``, else why not."""
    if client.manifest_digest(repository, signature_tag(digest)) is None:
        return "unsigned"
    body, _, _ = client.get_manifest(repository, signature_tag(digest))
    try:
        raw = json.loads(body)["annotations"][_ANNOTATION]
        claim = json.loads(raw)
        ok = claim["key"] == key and claim["digest"] == digest and hmac.compare_digest(
            str(claim["hmac"]), signer.mac(repository, key, digest))
    except (ValueError, KeyError, TypeError):
        ok = False
    return None if ok else "invalid signature"
