"""What a plan asks the engine about images: one ``inspect`` per target, or, for a plan of
many images, one listing of olly's labelled images per engine.

The listing is the engine's word at plan time, as each ``inspect`` was: the same fields
(``Id``, ``RepoTags``, the key label), read once. Only a positive answer is taken from it;
an image id it does not hold is inspected, so the reason a target rebuilds ("removed" or
"does not carry this key") is the one inspect gives. A tag it does not hold is on no image
carrying olly's key label, so no image under it can carry the target's key.

Which is cheaper depends on the engine. Measured on dockerd 20.10 over its unix socket
(olly.enginehttp): an ``inspect`` takes about 0.5 ms, the filtered listing about 170 ms with
550 images in the engine (205 of them olly's), as dockerd walks all its images for it. So a
plan inspects, unless it has at least LISTING_MIN_IMAGES image targets (e.g. 5,000 targets:
one listing instead of 2.5 s of inspects).
"""

from __future__ import annotations

from typing import Any, Iterable

from olly.engine import canonical_ref
from olly.errors import OllyError

LISTING_MIN_IMAGES = 300  # image targets in a plan from which one listing beats an inspect each


class EngineImages:
    """One engine's images, listed on first use. An engine that cannot list (a test double,
    an engine that refuses the filter) is asked per image, as before."""

    def __init__(self, engine: Any, listing: bool = True) -> None:
        self.engine = engine
        self.listing = listing
        self._loaded = not listing  # not listing: every question is an inspect
        self._ids: dict[str, dict[str, Any]] | None = None
        self._tags: dict[str, dict[str, Any]] = {}
        self._early: dict[str, Any] = {}  # image id -> its inspect, sent at plan start, read once
        self._early_tags: dict[str, Any] = {}  # tag -> its inspect, sent once the key was known

    def prefetch(self, image_ids: Iterable[str]) -> None:
        """Send the inspects of ``image_ids`` (the images the cache last recorded) now, and read
        each answer when the plan asks about that image: the engine answers while olly computes
        keys (no thread: the answers wait in their sockets). Never with a listing. A prefetched
        answer is the engine's word at plan time, as an inspect made later in the plan is; one
        that fails is simply asked again, and reports then."""
        later = getattr(self.engine, "inspect_later", None)
        if self.listing or later is None:
            return
        for image_id in dict.fromkeys(image_ids):
            if image_id not in self._early:
                answer = later(image_id)
                if answer is not None:
                    self._early[image_id] = answer

    def prefetch_tag(self, ref: str) -> None:
        """Send the inspect of tag ``ref`` now, for :meth:`tagged` (as ``prefetch``)."""
        later = getattr(self.engine, "inspect_later", None)
        if not self.listing and later is not None and ref not in self._early_tags:
            answer = later(ref)
            if answer is not None:
                self._early_tags[ref] = answer

    def close(self) -> None:
        """Drop the prefetched inspects nobody asked for (their connections)."""
        for answer in [*self._early.values(), *self._early_tags.values()]:
            closer = getattr(answer, "close", None)
            if closer is not None:
                closer()
        self._early.clear()
        self._early_tags.clear()

    def _load(self) -> None:
        self._loaded = True
        lister = getattr(self.engine, "labelled_images", None)
        if lister is None:
            return
        try:
            listed = lister()
        except OllyError:
            return  # per-image inspects then say precisely what is wrong
        self._ids = {}
        for image in listed:
            self._ids[str(image.get("Id"))] = image
            for tag in image.get("RepoTags") or []:
                self._tags[canonical_ref(str(tag))] = image

    def image(self, image_id: str) -> dict[str, Any] | None:
        """The image with this id (inspect-shaped), or None if the engine has none."""
        early = _read(self._early.pop(image_id, None))
        if early is not _NONE:
            return early  # type: ignore[no-any-return]
        if not self._loaded:
            self._load()
        found = self._ids.get(image_id) if self._ids is not None else None
        return found if found is not None else self.engine.inspect(image_id)

    def tagged(self, ref: str) -> dict[str, Any] | None:
        """The olly image tagged ``ref``; None when no image under that tag carries olly's key
        label (or, for an engine that cannot list, the engine's inspect of ``ref``)."""
        if not self._loaded:
            self._load()
        if self._ids is None:
            early = _read(self._early_tags.pop(ref, None))
            return self.engine.inspect(ref) if early is _NONE else early  # type: ignore[no-any-return]
        return self._tags.get(canonical_ref(ref))


_NONE = object()  # no early answer to use


def _read(answer: Any) -> Any:
    """An early inspect's answer; _NONE if there was none or it failed (then the caller asks
    again, and that call reports the error)."""
    if answer is None:
        return _NONE
    try:
        return answer()
    except Exception:
        return _NONE


class ImageViews:
    """One ``EngineImages`` per engine a plan consults (several with ``[engines]``), listing
    olly's images if the plan has ``images`` ≥ LISTING_MIN_IMAGES image targets."""

    def __init__(self, images: int) -> None:
        self._views: dict[int, EngineImages] = {}
        self.listing = images >= LISTING_MIN_IMAGES

    def close(self) -> None:
        for view in self._views.values():
            view.close()

    def of(self, engine: Any) -> EngineImages | None:
        if engine is None:
            return None
        view = self._views.get(id(engine))
        if view is None:
            view = self._views[id(engine)] = EngineImages(engine, self.listing)
        return view
