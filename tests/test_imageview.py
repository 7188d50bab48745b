"""What a plan asks the engine about images (olly.imageview): inspects for a small plan, one
listing for a large one, with the same decisions either way."""

from __future__ import annotations

from typing import Any

from olly.errors import OllyError
from olly.imageview import LISTING_MIN_IMAGES, EngineImages, ImageViews

OLLY = {"Id": "sha256:1", "RepoTags": ["docker.io/x/app:olly-1"], "Config": {"Labels": {"dev.olly.key": "k1"}}}
PLAIN = {"Id": "sha256:2", "RepoTags": ["x/plain:1"], "Config": {"Labels": {}}}


class Engine:
    def __init__(self, listing: bool = True, fails: bool = False) -> None:
        self.inspected: list[str] = []
        self.listed = 0
        self.fails = fails
        if not listing:
            self.labelled_images = None  # type: ignore[assignment]

    def inspect(self, ref: str) -> dict[str, Any] | None:
        self.inspected.append(ref)
        return next((i for i in (OLLY, PLAIN) if ref == i["Id"] or ref in i["RepoTags"]), None)

    def labelled_images(self) -> list[dict[str, Any]]:
        self.listed += 1
        if self.fails:
            raise OllyError("engine-error", "no listing")
        return [OLLY]


def test_a_listing_answers_positively_and_by_canonical_tag() -> None:
    engine = Engine()
    view = EngineImages(engine, listing=True)
    assert view.image("sha256:1") is OLLY
    assert view.tagged("x/app:olly-1") is OLLY  # Podman's docker.io/ spelling of the same tag
    assert view.tagged("x/plain:1") is None  # on no olly image: cannot carry a key
    assert engine.listed == 1 and engine.inspected == []


def test_an_id_the_listing_lacks_is_inspected_for_the_exact_reason() -> None:
    engine = Engine()
    view = EngineImages(engine, listing=True)
    assert view.image("sha256:2") is PLAIN  # exists, without olly's label: "does not carry this key"
    assert view.image("sha256:9") is None  # "was removed from the engine"
    assert engine.inspected == ["sha256:2", "sha256:9"]


def test_without_a_listing_every_question_is_an_inspect() -> None:
    for engine, listing in ((Engine(), False), (Engine(listing=False), True), (Engine(fails=True), True)):
        view = EngineImages(engine, listing=listing)
        assert view.image("sha256:1") is OLLY and view.tagged("x/plain:1") is PLAIN
        assert engine.inspected == ["sha256:1", "x/plain:1"]


def test_small_plans_inspect_large_ones_list() -> None:
    engine = Engine()
    assert ImageViews(5).of(None) is None
    small = ImageViews(LISTING_MIN_IMAGES - 1).of(engine)
    assert small is not None and small.image("sha256:1") is OLLY and engine.listed == 0
    views = ImageViews(LISTING_MIN_IMAGES)
    large = views.of(engine)
    assert large is views.of(engine) and large is not None
    large.image("sha256:1")
    large.tagged("x/app:olly-1")
    assert engine.listed == 1


class SocketEngine(Engine):
    """An engine that can send an inspect now and be read later (olly.engine.inspect_later)."""

    def __init__(self, fail: str = "") -> None:
        super().__init__(listing=False)
        self.sent: list[str] = []
        self.closed: list[str] = []
        self.fail = fail

    def inspect_later(self, ref: str) -> Any:
        self.sent.append(ref)
        engine = self

        class Answer:
            def __call__(self) -> dict[str, Any] | None:
                if ref == engine.fail:
                    raise OllyError("engine-unreachable", "lost the engine")
                return Engine.inspect(engine, ref)

            def close(self) -> None:
                engine.closed.append(ref)
        return Answer()


def test_prefetched_inspects_answer_once_then_the_engine_is_asked_again() -> None:
    """The ids the cache last recorded are sent at once; each answer is read once, when asked
    (a second question about the same id is a new inspect); an id not prefetched is inspected;
    answers nobody asked for are closed."""
    engine = SocketEngine()
    view = EngineImages(engine, listing=False)
    view.prefetch(["sha256:1", "sha256:gone", "sha256:1", "sha256:unused"])
    assert engine.sent == ["sha256:1", "sha256:gone", "sha256:unused"] and engine.inspected == []
    assert view.image("sha256:1") is OLLY and view.image("sha256:gone") is None
    assert view.image("sha256:1") is OLLY and view.image("sha256:2") is PLAIN
    assert engine.inspected == ["sha256:1", "sha256:gone", "sha256:1", "sha256:2"] and engine.sent[-1] == "sha256:unused"
    view.close()
    assert engine.closed == ["sha256:unused"]


def test_a_failed_prefetch_is_asked_again_and_reports_then() -> None:
    engine = SocketEngine(fail="sha256:1")
    view = EngineImages(engine, listing=False)
    view.prefetch(["sha256:1"])
    assert view.image("sha256:1") is OLLY  # the prefetched answer failed; a plain inspect answers
    assert engine.inspected == ["sha256:1"]


def test_no_prefetch_with_a_listing_or_an_engine_that_cannot_send_early() -> None:
    listing = SocketEngine()
    EngineImages(listing, listing=True).prefetch(["sha256:1"])
    plain = Engine(listing=False)  # no inspect_later (e.g. a test double)
    EngineImages(plain, listing=False).prefetch(["sha256:1"])
    assert listing.sent == [] and plain.inspected == []


def test_a_tag_asked_early_is_read_when_the_plan_asks() -> None:
    engine = SocketEngine()
    view = EngineImages(engine, listing=False)
    view.prefetch_tag("docker.io/x/app:olly-1")
    view.prefetch_tag("x/none:olly-2")
    assert engine.sent == ["docker.io/x/app:olly-1", "x/none:olly-2"] and engine.inspected == []
    assert view.tagged("docker.io/x/app:olly-1") is OLLY and view.tagged("x/none:olly-2") is None
    assert view.tagged("docker.io/x/app:olly-1") is OLLY  # asked again: a new inspect
    assert engine.inspected == ["docker.io/x/app:olly-1", "x/none:olly-2", "docker.io/x/app:olly-1"]
    EngineImages(listing_engine := SocketEngine(), listing=True).prefetch_tag("docker.io/x/app:olly-1")
    assert listing_engine.sent == []
