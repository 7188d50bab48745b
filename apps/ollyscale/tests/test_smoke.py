"""Smoke tests; excluded from the image by .dockerignore."""
from common.storage import SpanStore
from models import Span


def _span(trace: str, span: str, parent: str | None, start: int, end: int) -> Span:
    return Span(trace_id=trace, span_id=span, parent_span_id=parent, name="op",
                service_name="svc", start_time_unix_nano=start, end_time_unix_nano=end)


def test_store_summarises_traces():
    store = SpanStore()
    t = "a" * 32
    store.add(_span(t, "1" * 16, None, 0, 5_000_000))
    store.add(_span(t, "2" * 16, "1" * 16, 1_000_000, 2_000_000))
    [summary] = store.trace_summaries()
    assert summary.span_count == 2
    assert summary.duration_ms == 5.0


def test_health_route():
    from fastapi.testclient import TestClient
    from fastapi import FastAPI
    from app.routes import router

    api = FastAPI()
    api.include_router(router)
    assert TestClient(api).get("/api/health").json()["status"] == "ok"
