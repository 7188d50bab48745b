"""FastAPI routers for the ollyScale REST API (MODE=ui)."""
