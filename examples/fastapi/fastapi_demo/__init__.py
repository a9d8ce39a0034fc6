"""A small ASGI app: its greeting comes from the environment the package sets."""

import os

from fastapi import FastAPI

app = FastAPI(title="fastapi-demo")


@app.get("/")
def index() -> dict:
    return {"greeting": os.environ.get("FASTAPI_DEMO_GREETING", "hello"), "server": "uvicorn"}


@app.get("/items/{item_id}")
def item(item_id: int) -> dict:
    return {"item_id": item_id, "square": item_id * item_id}
