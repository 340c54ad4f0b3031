"""Membership and dissemination for rumor: SWIM + Lifeguard failure detection, gossip, push-pull, anti-entropy.

The protocol core is a set of pure state machines (`Membership` and its parts) that take ``now`` and a seeded
``random.Random`` and return what to send; drivers (the asyncio `Memberlist`, the `Simulation`) do the I/O.
Application data rides through a `Delegate` as opaque bytes: this package never knows what a CRDT is.
"""

from rumor.gossip.awareness import Awareness
from rumor.gossip.broadcast_queue import BroadcastQueue
from rumor.gossip.clock import Address, Clock, ManualClock, MonotonicClock
from rumor.gossip.config import Config
from rumor.gossip.delegate import Delegate, NoRequestHandlerError
from rumor.gossip.errors import ConfigError, GossipError, PacketDecodeError, PacketTooLargeError, UnknownMemberError
from rumor.gossip.member import Member, MemberStatus
from rumor.gossip.membership import Membership
from rumor.gossip.messages import MessageType, decode_app_response, encode_app_error, encode_app_response
from rumor.gossip.outgoing import JoinStatus, MembershipStats, Outgoing, Packet, StreamReply, StreamRequest
from rumor.gossip.probe_order import ProbeOrder
from rumor.gossip.sim_network import FaultPlan, MemoryNetwork, SimulationError
from rumor.gossip.simulation import ScenarioResult, SimNode, Simulation, StatusEvent, run_scenario
from rumor.gossip.suspicion import Suspicion, remaining_suspicion_time

__all__ = [
    "Address",
    "Awareness",
    "BroadcastQueue",
    "Clock",
    "Config",
    "ConfigError",
    "Delegate",
    "FaultPlan",
    "GossipError",
    "JoinStatus",
    "ManualClock",
    "Member",
    "MemberStatus",
    "Membership",
    "MembershipStats",
    "MemoryNetwork",
    "MessageType",
    "MonotonicClock",
    "NoRequestHandlerError",
    "Outgoing",
    "Packet",
    "PacketDecodeError",
    "PacketTooLargeError",
    "ProbeOrder",
    "ScenarioResult",
    "SimNode",
    "Simulation",
    "SimulationError",
    "StatusEvent",
    "StreamReply",
    "StreamRequest",
    "Suspicion",
    "UnknownMemberError",
    "decode_app_response",
    "encode_app_error",
    "encode_app_response",
    "remaining_suspicion_time",
    "run_scenario",
]
