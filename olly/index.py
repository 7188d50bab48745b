"""Multi-platform images: the OCI image index that lists one image per platform.

Each platform is built as its own image, with its own key and content tag, and pushed
as usual. The index is then assembled from the registry's own (fetched and hashed)
manifests, deterministically, so two machines that pushed the same platform images make
byte-identical indexes. It is pushed under the multi-platform content tag
(``olly-<hash of the per-platform keys>``); charts pin its digest, so one chart serves
every architecture.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from olly.errors import OllyError
from olly.registry import OCI_INDEX, RegistryClient, sha256_digest

if TYPE_CHECKING:
    from olly.config import Registry
    from olly.plan import TargetPlan


def platform_object(platform: str) -> dict[str, str]:
    """``linux/arm64/v8`` → ``{"os": "linux", "architecture": "arm64", "variant": "v8"}``."""
    parts = platform.split("/")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) > 2:
        out["variant"] = parts[2]
    return out


def index_document(entries: list[tuple[str, str, str, int]]) -> bytes:
    """The index bytes for ``(platform, manifest digest, media type, size)`` entries: sorted,
    compact JSON, no annotations that vary (a timestamp would change the digest per run)."""
    manifests = [{"digest": digest, "mediaType": media_type, "platform": platform_object(platform), "size": size}
                 for platform, digest, media_type, size in sorted(entries)]
    doc = {"manifests": manifests, "mediaType": OCI_INDEX, "schemaVersion": 2}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def entries_for(client: RegistryClient, name: str, digests: dict[str, str]) -> list[tuple[str, str, str, int]]:
    """Index entries from the registry's manifests of each platform (fetched and hashed)."""
    out = []
    for platform, digest in sorted(digests.items()):
        body, media_type, fetched = client.get_manifest(name, digest)
        if fetched != digest:
            raise OllyError("registry-error", f"registry served {fetched} for {name}@{digest}")
        out.append((platform, digest, media_type, len(body)))
    return out


def listed(client: RegistryClient, name: str, tag: str) -> tuple[str, dict[str, str]] | None:
    """``(index digest, {platform: manifest digest})`` of the index under ``tag``, or None when
    the tag is missing or holds no index."""
    digest = client.manifest_digest(name, tag)
    if digest is None:
        return None
    body, media_type, _ = client.get_manifest(name, digest)
    try:
        doc: dict[str, Any] = json.loads(body)
        if media_type != OCI_INDEX and doc.get("mediaType") != OCI_INDEX:
            return None
        platforms = {"/".join(filter(None, (m["platform"]["os"], m["platform"]["architecture"],
                                             m["platform"].get("variant")))): m["digest"] for m in doc["manifests"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return digest, platforms


def decide_index(tp: TargetPlan, client: RegistryClient, registry: Registry) -> None:
    """At plan time: the index is a remote hit only if every platform is one (verified) and
    the registry's index under the multi-platform tag lists exactly those manifests."""
    wanted = {v.platform: v.remote_digest for v in tp.variants}
    if not all(wanted.values()):
        missing = sorted(p for p, d in wanted.items() if not d)
        tp.reasons.append(f"index to be made in registry {registry.name!r} ({', '.join(missing)} not there yet)")
        return
    found = listed(client, registry.push_repository(tp.repository), tp.tag)
    if found is None or found[1] != wanted:
        tp.reasons.append(f"index to be made in registry {registry.name!r}")
        return
    tp.remote_digest = found[0]
    if all(v.action == "remote" for v in tp.variants):
        tp.action = "remote"


def push_index(client: RegistryClient, name: str, tag: str, digests: dict[str, str]) -> tuple[str, bool]:
    """Make ``name:tag`` the index of ``digests`` ({platform: manifest digest}). Returns
    (index digest, pushed now); a tag that already names the same index is left alone."""
    body = index_document(entries_for(client, name, digests))
    digest = sha256_digest(body)
    if client.manifest_digest(name, tag) == digest:
        return digest, False
    client.push_manifest(name, tag, body, OCI_INDEX)
    now = client.manifest_digest(name, tag)  # read back: what the tag names is what we pin
    if now != digest:
        raise OllyError("published-concurrently", f"{name}:{tag} was changed by another run while this one pushed "
                        "its index; nothing recorded, run again")
    return digest, True
