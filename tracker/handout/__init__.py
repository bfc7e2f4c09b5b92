"""Peer hand-out: the policies' contract, policies chosen by name, and the sample-rank-cut step around them."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from posswarm.errors import PosswarmError
from tracker.announce import Announce, compact_peer


@dataclasses.dataclass(frozen=True, slots=True)
class Requester:
    """All a policy may know of who asks: role and store. The tracker reuses one ranking for every requester sharing them."""

    role: str | None
    store: str | None

    @classmethod
    def of(cls, a: Announce) -> Requester:
        return cls(a.role, a.store)


class Candidate(Protocol):
    """All a policy may read of a peer it ranks (the records themselves, read-only through this view)."""

    @property
    def role(self) -> str | None: ...

    @property
    def store(self) -> str | None: ...

    @property
    def left(self) -> int: ...


C = TypeVar("C", bound=Candidate)

# rank(requester, candidates) -> the same candidates, best first. Store isolation has already run
# (tracker/isolation.py, in the desk): a policy orders what the requester may see, it never widens it.
Policy = Callable[[Requester, Sequence[C]], list[C]]


def _policies() -> dict[str, Policy]:
    from tracker.handout import completeness, store_first  # they import this module's contract

    return {"store-first": store_first.rank, "completeness": completeness.rank}


def policy(name: str) -> Policy:
    """The policy called ``name``; PosswarmError (at start-up) for a name we do not have."""
    try:
        return POLICIES[name]
    except KeyError:
        raise PosswarmError(f"hand-out policy {name!r} does not exist (choose one of: {', '.join(POLICIES)})") from None


def hand_out(
    rank: Policy,
    requester: Announce,
    candidates: Sequence[Announce],
    *,
    numwant: int,
    rng: random.Random | None = None,
) -> list[Announce]:
    """At most ``numwant`` of ``candidates`` for ``requester``, never itself, ordered by ``rank``.

    ``candidates`` are what the isolation rule let ``requester`` see (the desk runs it first).

    Candidates are shuffled first and policies sort stably, so peers a policy ranks equal
    share the load instead of the first announcer getting every connection.
    """
    return Ranked(rank, Requester.of(requester), candidates, rng=rng).cut(requester, numwant).announces()


def address(viewer_store: str | None, peer: Announce) -> str:
    """The address ``peer`` is handed out at to a requester of ``viewer_store``.

    A node's own ``ip=`` (its LAN address behind the store's NAT) is for its own store only;
    everybody else gets the address the tracker saw (or a trusted proxy reported).
    """
    return peer.lan_ip if peer.lan_ip is not None and peer.store == viewer_store else peer.ip


class Ranked:
    """A swarm shuffled and ranked once for every requester of one role and store; cut per announce.

    Policies look at the requester's role and store only, so one ranking serves every device of a
    store (or every plain client) until the swarm changes: the tracker keeps these for about a
    second instead of sorting the whole swarm on each announce. The compact (BEP 23/7) entries are
    packed once too, so most answers are a slice of one bytes object.
    """

    __slots__ = ("peers", "store", "_packed", "_blob")

    def __init__(self, rank: Policy, requester: Requester, candidates: Sequence[Announce], *,
                 rng: random.Random | None = None) -> None:
        shuffled = list(candidates)
        # Sorting on a random key is a shuffle at C speed.
        shuffled.sort(key=lambda _c, r=(rng or random).random: r())
        self.peers = rank(requester, shuffled)
        self.store = store = requester.store
        packed = [compact_peer(address(store, p), p.port) for p in self.peers]
        # An all-IPv4 swarm (the usual one) keeps a single bytes object: 6 bytes a peer, not a list of 40-byte ones.
        all_v4 = all(len(c) == 6 for c in packed)
        self._blob = b"".join(packed) if all_v4 else None
        self._packed = None if all_v4 else packed

    def cut(self, requester: Announce, numwant: int) -> Handed:
        """The first ``numwant`` ranked peers that are not ``requester`` (same address, or same node id)."""
        me, node, n = compact_peer(address(self.store, requester), requester.port), requester.node, len(self.peers)
        skip: list[int] = []
        start, end = 0, min(numwant, n)
        # Grow the window by one for each "me" inside it (tills behind one NAT share an address).
        while start < end:
            found = self._me(me, node, start, end)
            skip += found
            start, end = end, min(numwant + len(skip), n)
        return Handed(self, end, skip)

    def _me(self, me: bytes, node: str | None, start: int, end: int) -> list[int]:
        if node is not None:  # a posswarm node: its id as well as its address
            return [i for i in range(start, end) if self.peers[i].node == node or self._entry(i) == me]
        if self._blob is None:
            return [i for i in range(start, end) if self._packed[i] == me]
        # bytes.find runs in C; a match must start on a 6-byte boundary to be a whole entry.
        found, at = [], self._blob.find(me, 6 * start, 6 * end)
        while at >= 0:
            if at % 6 == 0:
                found.append(at // 6)
            at = self._blob.find(me, at + 1, 6 * end)
        return found

    def _entry(self, i: int) -> bytes:
        return self._blob[6 * i:6 * i + 6] if self._blob is not None else self._packed[i]


class Handed:
    """The peers one announce is handed: ranked positions below ``end`` except ``skip``, as records or bytes."""

    __slots__ = ("_ranked", "_end", "_skip")

    def __init__(self, ranked: Ranked | None, end: int, skip: list[int]) -> None:
        self._ranked, self._end, self._skip = ranked, end, skip

    def __len__(self) -> int:
        return self._end - len(self._skip)

    def announces(self) -> list[Announce]:
        if self._ranked is None:
            return []
        peers, skip = self._ranked.peers, self._skip
        return [peers[i] for i in range(self._end) if i not in skip]

    def peers(self) -> list[tuple[str, int, bytes]]:
        """(ip, port, peer_id) of each peer handed out, at the address this requester is to use."""
        store = self._ranked.store if self._ranked is not None else None
        return [(address(store, p), p.port, p.peer_id) for p in self.announces()]

    def compact(self) -> tuple[bytes, bytes]:
        """(6-byte IPv4 entries, 18-byte IPv6 entries), in hand-out order."""
        ranked = self._ranked
        if ranked is None:
            return b"", b""
        if ranked._blob is not None:  # slices between the skipped entries
            cuts = [-1, *self._skip, self._end]
            return b"".join([ranked._blob[6 * (a + 1):6 * b] for a, b in zip(cuts, cuts[1:])]), b""
        entries = [ranked._packed[i] for i in range(self._end) if i not in self._skip]
        return b"".join(e for e in entries if len(e) == 6), b"".join(e for e in entries if len(e) == 18)


NOBODY = Handed(None, 0, [])


POLICIES: dict[str, Policy] = _policies()
