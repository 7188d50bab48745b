"""REST endpoints served under /api."""
from fastapi import APIRouter, HTTPException

from common.storage import get_store
from models import HealthStatus, TraceSummary

router = APIRouter(prefix="/api")


@router.get("/health", response_model=HealthStatus)
def health() -> HealthStatus:
    return HealthStatus(mode="ui")


@router.get("/traces", response_model=list[TraceSummary])
def list_traces(limit: int = 50) -> list[TraceSummary]:
    return get_store().trace_summaries(limit=limit)


@router.get("/traces/{trace_id}")
def get_trace(trace_id: str) -> dict:
    spans = get_store().spans_for(trace_id)
    if not spans:
        raise HTTPException(status_code=404, detail="trace not found")
    return {"trace_id": trace_id, "spans": [s.model_dump() for s in spans]}
