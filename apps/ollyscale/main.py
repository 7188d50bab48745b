"""ollyScale entry point: the MODE env var selects what this process runs."""
import os
import sys

UI_PORT = int(os.environ.get("PORT", "5002"))
RECEIVER_PORT = int(os.environ.get("RECEIVER_PORT", "4343"))


def run_ui() -> None:
    import uvicorn
    from fastapi import FastAPI

    from app.routes import router

    api = FastAPI(title="ollyScale", version=os.environ.get("APP_VERSION", "dev"))
    api.include_router(router)
    uvicorn.run(api, host="0.0.0.0", port=UI_PORT)


def run_receiver() -> None:
    from receiver.server import serve

    serve(RECEIVER_PORT)


def main() -> int:
    mode = os.environ.get("MODE", "ui").strip().lower()
    if mode == "ui":
        run_ui()
    elif mode == "receiver":
        run_receiver()
    else:
        print(f"unknown MODE {mode!r}; expected 'ui' or 'receiver'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
