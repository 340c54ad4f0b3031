"""How an application rides on membership without membership knowing what it carries.

Subclass `Delegate` and override what you need; every hook has a harmless default. Hooks are called
synchronously from inside the state machine (``tick``/``receive``), so they must be quick and must not call back
into the membership; queue work instead. ``handle_request`` is the one async hook: the driver (or the simulator)
awaits it for each incoming app request.
"""

from __future__ import annotations

from rumor.gossip.errors import GossipError
from rumor.gossip.member import Member


class NoRequestHandlerError(GossipError, LookupError):
    """An app request arrived but the delegate does not serve requests."""


class Delegate:
    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """App payloads to piggyback on an outgoing gossip packet: each costs ``overhead`` bytes of framing on top of
        its length, and the total (payloads + overheads) must stay within ``limit``; extra payloads are dropped."""
        return []

    def notify_message(self, payload: bytes, sender: str) -> None:
        """An app payload arrived, as a piggybacked broadcast or a `send_to` datagram from member ``sender``."""

    def local_state(self, join: bool) -> bytes:
        """Opaque state sent along with our member table on push-pull (``join`` is True when joining)."""
        return b""

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        """The peer's `local_state` from a push-pull exchange."""

    def notify_join(self, member: Member) -> None:
        """A member became known (or came back from dead/left)."""

    def notify_leave(self, member: Member) -> None:
        """A member was declared dead or announced that it left."""

    def notify_update(self, member: Member) -> None:
        """A live member changed its address or metadata."""

    async def handle_request(self, payload: bytes, sender: str) -> bytes:
        """Answer an app request (stream); raising makes the requester get an error response."""
        raise NoRequestHandlerError("this node does not serve app requests")
