"""`GET /v1/export` and `POST /v1/import` (`server.backup` does the work; the format is `server.backup_format`).

The export streams with chunked transfer encoding as `application/x-rumor-export`. Once its first byte is sent
there is no status left to change: if the node fails half-way the stream just ends, without the trailer, and any
reader of the file (`rumor export` itself, which keeps no partial file) sees it truncated. The import reads its body
as a stream (no `--max-body-bytes` for the whole file: each record has its own limit) and answers once every
joined record is durable, with the counts of `ImportResult`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from rumor.server.backup import export_chunks, import_export
from rumor.server.backup_format import MEDIA_TYPE, SUFFIX
from rumor.server.errors import ServerError, UnsupportedMediaTypeError
from rumor.server.http_request import query_options
from rumor.server.negotiation import encode_body, response_format
from rumor.server.node import Node

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: what an import body may be sent as: the export's own type, or untyped bytes (curl --data-binary sends none)
IMPORT_MEDIA_TYPES = frozenset({MEDIA_TYPE, "application/octet-stream"})
_READ_BYTES = 256 * 1024


class ExportMediaTypeError(UnsupportedMediaTypeError):
    """An import body sent as something other than an export file."""

    def __init__(self, media_type: str) -> None:
        super().__init__(media_type)
        self.args = (f"unsupported media type {media_type!r}: send the export file as {MEDIA_TYPE} "
                     "(or application/octet-stream)",)


def export_route(node: Node) -> Handler:
    async def export(request: web.Request) -> web.StreamResponse:
        query_options(request, frozenset())
        node.keyspace  # noqa: B018 -- a node not running answers 503 before the stream starts
        name = f"{node.node_id}-{node.hlc.physical_ms()}{SUFFIX}"
        headers = {"Content-Type": MEDIA_TYPE, "Cache-Control": "no-store",
                   "Content-Disposition": f'attachment; filename="{name}"'}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        with contextlib.suppress(ConnectionResetError):  # the client left: nothing more to send, nothing failed
            await response.prepare(request)
            try:
                async for chunk in export_chunks(node):
                    await response.write(chunk)
            except ServerError as exc:  # the node stopped under the export: end the stream without its trailer
                log.warning("export to %s ended early: %s", request.remote, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        return response

    return export


def import_route(node: Node) -> Handler:
    async def import_(request: web.Request) -> web.StreamResponse:
        query_options(request, frozenset())
        media = request.content_type
        if media not in IMPORT_MEDIA_TYPES:
            raise ExportMediaTypeError(media)
        spool_dir = None if node.config.in_memory else node.config.data_dir
        result = await import_export(node, request.content.iter_chunked(_READ_BYTES), spool_dir=spool_dir)
        fmt = response_format(request.headers.get("Accept"))
        return web.Response(body=encode_body(result.to_json(), fmt), content_type=fmt)

    return import_


__all__ = ["IMPORT_MEDIA_TYPES", "ExportMediaTypeError", "export_route", "import_route"]
