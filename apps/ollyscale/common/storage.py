"""In-memory span store (Redis-backed in the deployed chart)."""
import threading
from collections import defaultdict

from models import Span, TraceSummary


class SpanStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: dict[str, list[Span]] = defaultdict(list)

    def add(self, span: Span) -> None:
        with self._lock:
            self._traces[span.trace_id].append(span)

    def spans_for(self, trace_id: str) -> list[Span]:
        with self._lock:
            return list(self._traces.get(trace_id, []))

    def trace_summaries(self, limit: int = 50) -> list[TraceSummary]:
        with self._lock:
            items = list(self._traces.items())[-limit:]
        out = []
        for trace_id, spans in items:
            root = next((s for s in spans if s.parent_span_id is None), spans[0])
            start = min(s.start_time_unix_nano for s in spans)
            end = max(s.end_time_unix_nano for s in spans)
            out.append(TraceSummary(trace_id=trace_id, root_service=root.service_name,
                                    span_count=len(spans), duration_ms=(end - start) / 1e6))
        return out


_store = SpanStore()


def get_store() -> SpanStore:
    return _store
