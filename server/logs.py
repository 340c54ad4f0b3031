"""Process logging for `rumor serve`: the level and format an operator chose, and the optional access log.

`json` writes one object a line (`time`, `level`, `logger`, `message`, and `exception` when there is one), what log
shippers (Loki, Elasticsearch, CloudWatch) parse without a grok pattern.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from rumor.server.config import ServerConfig

ACCESS_LOGGER = "rumor.access"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(config: ServerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


class AccessLogger(AbstractAccessLogger):
    """One record a request at INFO on `rumor.access`: method, path, status, bytes and milliseconds (as `fields` in
    JSON output, one readable line in text)."""

    def log(self, request: BaseRequest, response: StreamResponse, duration: float) -> None:
        fields = {"method": request.method, "path": request.path_qs, "status": response.status,
                  "bytes": response.body_length, "ms": round(duration * 1000, 2), "remote": request.remote}
        self.logger.info("%s %s %s %.2fms", request.method, request.path_qs, response.status, duration * 1000,
                         extra={"fields": fields})
