"""The client library and CLI read whatever a node (or a proxy in front of it) answers without a traceback."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rumor.server.client import MalformedResponseError, RumorClient

pytestmark = pytest.mark.integration  # a real aiohttp server on loopback plays the misbehaving node

GARBLED = [
    ("application/msgpack", b"\xc1", "msgpack"),  # a byte that begins no msgpack value
    ("application/msgpack", b"\x92\x01", "msgpack"),  # an array cut short
    ("application/json", b'{"key": ', "JSON"),
    ("application/json", b'{"v": NaN}', "JSON"),
]


@pytest.mark.parametrize(("media", "body", "named"), GARBLED)
async def test_a_garbled_answer_is_a_clear_error_naming_the_format(media: str, body: bytes, named: str) -> None:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=media)

    app = web.Application()
    app.router.add_get("/v1/kv/{key}", answer)
    async with TestServer(app, host="127.0.0.1") as server, \
            RumorClient(str(server.make_url("/")), use_msgpack=media.endswith("msgpack")) as client:
        with pytest.raises(MalformedResponseError, match=f"GET /v1/kv/k: the answer's .*not valid {named}"):
            await client.get("k")
