"""Demo backend: a tiny inventory service with simulated latency and errors."""
import os
import random
import time

from flask import Flask, abort, jsonify

PORT = int(os.environ.get("PORT", "5001"))
ERROR_RATE = float(os.environ.get("ERROR_RATE", "0.05"))

STOCK = {"widget": 12, "gadget": 3, "gizmo": 0}

app = Flask(__name__)


@app.get("/inventory/<item>")
def inventory(item: str):
    time.sleep(random.uniform(0.01, 0.2))
    if random.random() < ERROR_RATE:
        abort(500, description="simulated backend failure")
    if item not in STOCK:
        abort(404, description=f"unknown item {item}")
    return jsonify(item=item, in_stock=STOCK[item])


@app.get("/healthz")
def healthz():
    return "ok\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=PORT)
