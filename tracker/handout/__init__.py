"""Peer hand-out: policies chosen by name, and the sample-rank-cut step around them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from posswarm.errors import PosswarmError
from tracker.announce import Announce, compact_peer
from tracker.handout import completeness, store_first

# rank(requester, candidates, *, cross_store) -> candidates it may see, best first. A policy may read the
# requester's role and store only: the tracker reuses one ranking for every requester sharing them.
Policy = Callable[..., list[Announce]]

POLICIES: dict[str, Policy] = {
    "store-first": store_first.rank,
    "completeness": completeness.rank,
}


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
    cross_store: bool = False,
    rng: random.Random | None = None,
) -> list[Announce]:
    """At most ``numwant`` peers for ``requester``, never itself, ordered by ``rank``.

    Candidates are shuffled first and policies sort stably, so peers a policy ranks equal
    share the load instead of the first announcer getting every connection.
    """
    return Ranked(rank, requester, candidates, cross_store=cross_store, rng=rng).cut(requester, numwant).announces()


class Ranked:
    """A swarm shuffled and ranked once for every requester of one role and store; cut per announce.

    Policies look at the requester's role and store only, so one ranking serves every device of a
    store (or every plain client) until the swarm changes: the tracker keeps these for about a
    second instead of sorting the whole swarm on each announce. The compact (BEP 23/7) entries are
    packed once too, so most answers are a slice of one bytes object.
    """

    __slots__ = ("peers", "_packed", "_blob")

    def __init__(self, rank: Policy, requester: Announce, candidates: Sequence[Announce], *,
                 cross_store: bool = False, rng: random.Random | None = None) -> None:
        shuffled = list(candidates)
        # Sorting on a random key is a shuffle at C speed.
        shuffled.sort(key=lambda _c, r=(rng or random).random: r())
        self.peers = rank(requester, shuffled, cross_store=cross_store)
        packed = [compact_peer(p.ip, p.port) for p in self.peers]
        # An all-IPv4 swarm (the usual one) keeps a single bytes object: 6 bytes a peer, not a list of 40-byte ones.
        all_v4 = all(len(c) == 6 for c in packed)
        self._blob = b"".join(packed) if all_v4 else None
        self._packed = None if all_v4 else packed

    def cut(self, requester: Announce, numwant: int) -> Handed:
        """The first ``numwant`` ranked peers that are not ``requester`` (same address, or same node id)."""
        me, node, n = compact_peer(requester.ip, requester.port), requester.node, len(self.peers)
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
