"""Demo frontend: calls the backend and returns a combined response."""
import os
import random

import requests
from flask import Flask, jsonify

BACKEND_URL = os.environ.get("BACKEND_URL", "http://localhost:5001")
PORT = int(os.environ.get("PORT", "5000"))

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(service="demo-frontend", routes=["/order", "/healthz"])


@app.get("/order")
def order():
    item = random.choice(["widget", "gadget", "gizmo"])
    try:
        resp = requests.get(f"{BACKEND_URL}/inventory/{item}", timeout=2)
        resp.raise_for_status()
    except requests.RequestException as exc:
        return jsonify(item=item, error=str(exc)), 502
    return jsonify(item=item, inventory=resp.json())


@app.get("/healthz")
def healthz():
    return "ok\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=PORT)
