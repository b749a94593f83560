"""A trivial FastAPI upstream for proxy benchmarks: `python bench/trivial_upstream.py PORT`."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/products/{product_id}")
async def product(product_id: int) -> dict[str, object]:
    return {"id": product_id, "name": "Kettle", "price": "19.99", "stock": 5, "version": 1}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )
