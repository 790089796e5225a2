"""Affinity routing: consistent hashing with bounded loads, and the keys it hashes.

A route whose policy is `prefix` or `session` sends each request to the endpoint its key
hashes to, so the same conversation reaches the same engine (and its KV cache) every turn.
Every edge replica must pick alike without talking to the others, so everything here is a
pure function of the request and the set of serving addresses: keys and ring points come
from BLAKE2b (Python's `hash()` is salted per process), never from process state.

The ring (`Ring`): each endpoint owns `VNODES` points, the hashes of its address and an
index. A key's candidates are the distinct endpoints met clockwise from the key's point;
adding one endpoint of n+1 moves only the keys it now owns (about 1/(n+1) of them), and
removing one moves only its own keys, to their next endpoint clockwise.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads",
2018; Envoy's and HAProxy's `hash-balance-factor`): an endpoint takes a key only while its
requests in flight are below ceil(c * (total in flight + 1) / n); a busier one passes the
key on clockwise, so a hot prefix spills to the same next endpoint on every edge instead of
piling on one engine. With c ≥ 1 some endpoint is always below the bound; the least-loaded
choice is only the guard for a ring that lacks a candidate.

The key (`request_key`): see `_chat_anchor` for what of a prompt is hashed and why.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from switchyard.edge.routing.table import Policy
from switchyard.inference.v1 import inference_pb2 as pb

#: Points per endpoint: with 160 (ketama's), each of a few endpoints owns its share of keys
#: within a few percent.
VNODES: Final = 160
#: Rings kept (one per distinct set of serving addresses): routes * recent set changes.
MAX_RINGS: Final = 256
#: Messages of a chat's opening that are hashed (system prompts before the first user turn).
MAX_ANCHOR_MESSAGES: Final = 8
#: Headers that name a client's session (the first present wins over the body's `user`).
SESSION_HEADERS: Final = ("x-session-id", "x-switchyard-session")


def point(data: bytes) -> int:
    """A 64-bit position on the ring: the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """The hash ring of one set of endpoint addresses."""

    __slots__ = ("_owners", "_points", "addresses")

    def __init__(self, addresses: Iterable[str], vnodes: int = VNODES) -> None:
        self.addresses = frozenset(addresses)
        placed = sorted(
            (point(f"{address}#{i}".encode()), address)
            for address in self.addresses
            for i in range(vnodes)
        )
        self._points = [p for p, _ in placed]
        self._owners = [a for _, a in placed]

    def walk(self, key: int) -> Iterator[str]:
        """The distinct endpoints clockwise from `key`, its owner first."""
        size = len(self._points)
        start = bisect.bisect_left(self._points, key)
        seen: set[str] = set()
        for i in range(size):
            owner = self._owners[(start + i) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self.addresses):
                    return

    def owner(self, key: int) -> str | None:
        return next(self.walk(key), None)


class Rings:
    """Rings by address set, built once per set (never per request), the oldest dropped."""

    __slots__ = ("_rings", "_size")

    def __init__(self, size: int = MAX_RINGS) -> None:
        self._rings: OrderedDict[frozenset[str], Ring] = OrderedDict()
        self._size = size

    def get(self, addresses: frozenset[str]) -> Ring:
        ring = self._rings.get(addresses)
        if ring is None:
            ring = self._rings[addresses] = Ring(addresses)
            if len(self._rings) > self._size:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(addresses)
        return ring

    def __len__(self) -> int:
        return len(self._rings)


def load_bound(load_factor: float, total_in_flight: int, endpoints: int) -> int:
    """The most requests in flight an endpoint may have and still take a key (exclusive)."""
    return math.ceil(load_factor * (total_in_flight + 1) / endpoints)


def choose(ring: Ring, key: int, loads: Mapping[str, int], load_factor: float) -> str | None:
    """The endpoint for `key` among `loads` (candidate address → requests in flight): the
    first clockwise below the load bound; the least loaded when none is on the ring."""
    if not loads:
        return None
    bound = load_bound(load_factor, sum(loads.values()), len(loads))
    for address in ring.walk(key):
        load = loads.get(address)
        if load is not None and load < bound:
            return address
    return min(loads, key=lambda a: (loads[a], a))


# -- keys ---------------------------------------------------------------------------------------


def session_of(headers: Mapping[str, str], user: str | None) -> str | None:
    """The client's session id: a session header, else the body's `user`; None if neither."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return user or None


def _message_text(message: pb.ChatMessage, prefix_chars: int) -> str:
    """The message's first `prefix_chars` characters (an image counts as its URL)."""
    if message.content or not message.parts:
        return message.content[:prefix_chars]
    text = "".join(
        (part.text if part.HasField("text") else part.image.url)[:prefix_chars]
        for part in message.parts
    )
    return text[:prefix_chars]


def _chat_anchor(messages: Iterable[pb.ChatMessage], prefix_chars: int) -> bytes:
    """What of a chat is hashed: every message up to and including the first user turn,
    each cut to its first `prefix_chars` characters.

    The key must be computed by any edge from the request alone, and stay the same as the
    conversation grows: each turn resends the whole history, so everything before the
    latest turn is shared, but only the opening is shared by *every* turn, the first
    included. Hashing the system prompt(s) and the first user turn covers that opening:
    it is the same on turn 1 and turn 20, and differs between conversations (which share,
    at most, a system prompt, cheap to cache on every engine). A fixed count of leading
    blocks of the rendered prompt would not do: blocks past a short first turn change on
    the next turn, and blocks within a long system prompt put every conversation on one
    engine. Each message is cut on its own so a long system prompt cannot crowd out the
    user turn that tells conversations apart."""
    digest = hashlib.blake2b(digest_size=16)
    for i, message in enumerate(messages):
        if i == MAX_ANCHOR_MESSAGES:
            break
        digest.update(message.role.encode() + b"\0")
        digest.update(_message_text(message, prefix_chars).encode() + b"\0")
        if message.role == "user":
            break
    return digest.digest()


def request_key(
    policy: Policy, request: pb.GenerateRequest, session: str | None, prefix_chars: int
) -> int | None:
    """The ring position of a generation under `policy`; None: route by load.

    A raw prompt (completions) has no turns: its first `prefix_chars` characters are hashed,
    so a prompt that grows by appending keeps its key once it is longer than that."""
    if policy == "load":
        return None
    if policy == "session" and session:
        return point(b"session\0" + session.encode())
    if request.HasField("chat"):
        return point(b"chat\0" + _chat_anchor(request.chat.messages, prefix_chars))
    return point(b"prompt\0" + request.prompt[:prefix_chars].encode())


def embed_key(
    policy: Policy, request: pb.EmbedRequest, session: str | None, prefix_chars: int
) -> int | None:
    """The ring position of an embedding request: its session, or its first input's start."""
    if policy == "load":
        return None
    if policy == "session" and session:
        return point(b"session\0" + session.encode())
    if not request.inputs:
        return None
    first = request.inputs[0]
    if first.HasField("tokens"):
        ids = first.tokens.ids[: max(prefix_chars // 4, 1)]  # about as many tokens as chars
        return point(b"tokens\0" + b",".join(str(i).encode() for i in ids))
    return point(b"text\0" + first.text[:prefix_chars].encode())
