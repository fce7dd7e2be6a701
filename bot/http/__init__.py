"""The bot's read-only HTTP side: Prometheus metrics, health probes and a status page (`server`).

Kept importable without aiohttp.web or prometheus-client, so the command line can name `HttpStartError`
without loading either.
"""

from __future__ import annotations


class HttpStartError(Exception):
    """The listener could not start (address in use, no such host): one line naming the setting."""
