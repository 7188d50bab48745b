"""Pydantic data models shared by the API and the receiver."""
from datetime import datetime, timezone

from pydantic import BaseModel, Field


class Span(BaseModel):
    trace_id: str = Field(min_length=32, max_length=32)
    span_id: str = Field(min_length=16, max_length=16)
    parent_span_id: str | None = None
    name: str
    service_name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, str] = Field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e6


class TraceSummary(BaseModel):
    trace_id: str
    root_service: str
    span_count: int
    duration_ms: float


class HealthStatus(BaseModel):
    status: str = "ok"
    mode: str
    checked_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
