"""PeerStore in Redis: several tracker processes behind one load balancer share one swarm view."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import msgpack
import redis

from posswarm.errors import PosswarmError
from tracker.announce import Announce
from tracker.peerstore import RECORD_FIELDS, Admission, Caps, Lifetimes, Peer, live, peer_key, successor

_FIELDS = [f.name for f in dataclasses.fields(Announce)]
_TOTAL = "\0total"  # the all-stores count's field: no store id holds a NUL


class RedisPeerStore:
    """Per torrent a Redis hash (peer key -> packed Peer) and a downloaded counter; a set of torrents.

    Times are the trackers' wall clocks (``now``), so every tracker must run NTP, as any
    host behind a load balancer does. Each call is one or two pipelined round trips.
    """

    def __init__(self, client: redis.Redis, *, peer_ttl: float, retain: float, max_peer_ttl: float | None = None,
                 caps: Caps | None = None, prefix: str = "posswarm:") -> None:
        self.peer_ttl = peer_ttl
        self.lifetimes = Lifetimes(peer_ttl, max(peer_ttl, max_peer_ttl if max_peer_ttl is not None else peer_ttl))
        self.retain = max(retain, self.lifetimes.max_peer_ttl)
        self.admission = Admission(caps or Caps())
        self._r = client
        self._p = prefix

    @classmethod
    def connect(cls, url: str, *, peer_ttl: float, retain: float, max_peer_ttl: float | None = None,
                caps: Caps | None = None) -> RedisPeerStore:
        """A store on the Redis at ``url``; PosswarmError at start-up when it does not answer."""
        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            client.ping()
        except (redis.RedisError, ValueError) as exc:
            raise PosswarmError(f"tracker peer store: cannot reach Redis at {url} ({exc}); start redis-server or fix redis_url") from None
        return cls(client, peer_ttl=peer_ttl, retain=retain, max_peer_ttl=max_peer_ttl, caps=caps)

    def record(self, announce: Announce, now: float) -> None:
        h, key = announce.info_hash.hex(), peer_key(announce)
        old_raw = self._r.hget(self._swarm_key(h), key)
        pipe = self._r.pipeline()
        if old_raw is None:
            self._admit_new(announce.store, now)
            pipe.hincrby(self._counts, _TOTAL, 1)
            if announce.store is not None:
                pipe.hincrby(self._counts, announce.store, 1)
        pipe.hset(self._swarm_key(h), key, _pack(successor(_unpack(old_raw) if old_raw else None, announce, now,
                                                                  self.lifetimes)))
        pipe.sadd(self._p + "torrents", h)
        if announce.event == "completed":
            pipe.hincrby(self._p + "downloaded", h, 1)
        pipe.execute()

    def swarm(self, info_hash: bytes, now: float) -> list[Announce]:
        return [p.announce for p in self._peers(info_hash.hex()) if live(p, now)]

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int, int]:
        live = self.swarm(info_hash, now)
        complete = sum(1 for a in live if a.left == 0)
        downloaded = int(self._r.hget(self._p + "downloaded", info_hash.hex()) or 0)
        return complete, len(live) - complete, downloaded

    def info_hashes(self) -> list[bytes]:
        return [bytes.fromhex(h.decode()) for h in self._r.smembers(self._p + "torrents")]

    def records(self) -> Iterator[Peer]:
        hashes = [h.decode() for h in self._r.smembers(self._p + "torrents")]
        pipe = self._r.pipeline()
        for h in hashes:
            pipe.hvals(self._swarm_key(h))
        for values in pipe.execute():
            yield from (_unpack(v) for v in values)

    @property
    def _counts(self) -> str:
        return self._p + "records"  # field per store, and _TOTAL: shared by every tracker on this Redis

    def _admit_new(self, store: str | None, now: float) -> None:
        # Counts shared by every tracker on this Redis; two admitting at once may pass a cap by one each.
        def counts() -> tuple[int, int]:
            total, in_store = self._r.hmget(self._counts, _TOTAL, store if store is not None else _TOTAL)
            return int(total or 0), int(in_store or 0)

        self.admission.admit(store, now, counts, lambda: self._forget(lambda p: not live(p, now)))

    def expire(self, now: float) -> int:
        return self._forget(lambda p: now - p.last_seen > self.retain)

    def _forget(self, old: Callable[[Peer], bool]) -> int:
        gone = 0
        for h in [h.decode() for h in self._r.smembers(self._p + "torrents")]:
            swarm = {key: _unpack(raw) for key, raw in self._r.hgetall(self._swarm_key(h)).items()}
            going = [key for key, peer in swarm.items() if old(peer)]
            if going:
                pipe = self._r.pipeline()
                pipe.hdel(self._swarm_key(h), *going)
                pipe.hincrby(self._counts, _TOTAL, -len(going))
                for key in going:
                    if swarm[key].store is not None:
                        pipe.hincrby(self._counts, swarm[key].store, -1)
                pipe.execute()
                gone += len(going)
            if len(going) == len(swarm):
                self._r.pipeline().srem(self._p + "torrents", h).hdel(self._p + "downloaded", h).execute()
        return gone

    def _swarm_key(self, h: str) -> str:
        return self._p + "swarm:" + h

    def _peers(self, h: str) -> list[Peer]:
        return [_unpack(v) for v in self._r.hvals(self._swarm_key(h))]


def _pack(peer: Peer) -> bytes:
    a = peer.announce
    return msgpack.packb([[getattr(a, f) for f in _FIELDS], peer.last_seen, peer.stopped, peer.progressed,
                          peer.live_until])


def _unpack(raw: bytes) -> Peer:
    fields, last_seen, stopped, progressed, *later = msgpack.unpackb(raw)
    values = dict(zip(_FIELDS, fields))  # _pack writes every Announce field (lan_ip: absent before it existed)
    # A record an older tracker wrote has no live_until: live for no longer than its next announce says.
    return Peer(*(values.get(name) for name in RECORD_FIELDS), last_seen=last_seen, stopped=stopped,
                progressed=progressed, live_until=later[0] if later else last_seen)
