"""In-process app runner for the server tests (a module of its own: `conftest` names clash across test
directories when several are collected in one run)."""

from __future__ import annotations

import asyncio
import contextlib

import httpx


@contextlib.asynccontextmanager
async def running_app(app):
    """The app with its lifespan entered, and a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def run(coro):
    return asyncio.run(coro)
