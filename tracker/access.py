"""Who may use the tracker and as whom: store passkeys, central's passkeys, trusted proxies, and the guess limit."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from posswarm.guess_limit import GuessLimit
from posswarm.identity.certificate import CertifiedNode
from tracker.announce import Announce, BadRequest, Denied
from tracker.isolation import CENTRAL
from tracker.node_auth import attributed

LOOPBACK = ("127.0.0.0/8", "::1/128")  # default trusted proxies: only this host itself
MAX_ADDRESSES = 65536  # addresses an address table remembers (memory bound; the oldest go first)


class Access:
    """The tracker's admission rules, fed the published info-hashes by whoever polls the catalog.

    Private mode: a store's passkey places an announce in that store; only a central passkey
    may announce as a seeder (or in no store). Open mode takes any torrent and believes the
    store an announce names (a lab tracker), but still only a seeder is central.
    ``ip=`` is believed for every viewer only from ``trusted_proxies`` (or central); from anyone
    else it is the announcer's LAN address, handed to its own store alone (tracker/handout.address).
    An announce over a verified node certificate needs no passkey: it is placed where the
    certificate says (tracker/node_auth.py), in either mode.
    """

    def __init__(self, *, open: bool, passkeys: Mapping[str, str] | None = None, central: Iterable[str] = (),
                 trusted_proxies: Sequence[str] = LOOPBACK, guesses_per_minute: int = 20) -> None:
        self.open = open
        self._store_of = {key: store for store, key in (passkeys or {}).items()}
        self._store_of.update({key: CENTRAL for key in central})
        self._proxies = [ipaddress.ip_network(n) for n in trusted_proxies]
        self._trusted: dict[str, bool] = {}
        # While an address has no token left, none of its passkeys is even looked up, right or wrong:
        # otherwise a guesser would still learn which guess was right.
        self.guesses = GuessLimit(burst=guesses_per_minute, every_s=60.0 / guesses_per_minute,
                                  max_addresses=MAX_ADDRESSES)
        self.published: frozenset[bytes] = frozenset()

    def publish(self, info_hashes: Iterable[bytes]) -> None:
        """Replace the set of trackable torrents (a release withdrawn from the catalog stops being tracked)."""
        self.published = frozenset(info_hashes)

    def admit(self, a: Announce, passkey: str | None, now: float, node: CertifiedNode | None = None) -> Announce:
        """``a`` as the tracker should record it (store, address), or BadRequest naming why it is refused.

        ``node`` = who the client's verified certificate says it is (then ``passkey`` is not consulted)."""
        if node is not None:
            if not self.open:
                self._check_published(a)
            return self._placed(attributed(a, node), node.store, self._trusted_proxy(a.ip))
        if self.open:
            if a.store == CENTRAL and a.role != "seeder":
                raise BadRequest(f"store id {CENTRAL!r} is central's own (give this node its store's id)")
            return self._placed(a, CENTRAL if a.role == "seeder" else a.store, self._trusted_proxy(a.ip))
        store = self.store_of(passkey, a.ip, now)
        self._check_published(a)
        if store == CENTRAL:
            if a.role not in (None, "seeder") or a.store not in (None, CENTRAL):
                raise BadRequest("central's passkey is for central's seeders: announce a store's nodes with its passkey")
            return self._placed(a, CENTRAL, True)
        if a.role == "seeder":
            raise BadRequest("role=seeder needs central's passkey: a store's nodes announce as cache or device")
        if a.store is not None and a.store != store:
            raise BadRequest(f"store {a.store!r} does not match the passkey's store (use {a.store}'s own tracker URL)")
        return self._placed(a, store, self._trusted_proxy(a.ip))

    def scrapeable(self, info_hashes: list[bytes], passkey: str | None, address: str, now: float,
                   node: CertifiedNode | None = None) -> list[bytes] | None:
        """The hashes a scrape may report (None = every tracked torrent); Denied for a bad passkey."""
        if self.open:
            return info_hashes or None
        if node is None:
            self.store_of(passkey, address, now)
        return [h for h in info_hashes if h in self.published] if info_hashes else sorted(self.published)

    def store_of(self, passkey: str | None, address: str, now: float) -> str:
        """The store ``passkey`` belongs to (CENTRAL for central's); Denied, counted against ``address``, otherwise."""
        if passkey is None or self.guesses.wait_s(address, now) > 0:
            raise Denied()  # no passkey is no guess (a BEP 15 scrape cannot carry one): not counted
        store = self._store_of.get(passkey)
        if store is None:
            self.guesses.refused(address, now)
            raise Denied()
        return store

    def _check_published(self, a: Announce) -> None:
        if a.info_hash not in self.published:
            raise BadRequest(f"torrent {a.info_hash.hex()} is not a published release (publish it on the seeder first)")

    def _placed(self, a: Announce, store: str | None, trusted: bool) -> Announce:
        if a.lan_ip is None:
            return a if a.store == store else dataclasses.replace(a, store=store)
        if trusted:  # a proxy in front of the client (or central itself): its ip= is the client's address
            return dataclasses.replace(a, store=store, ip=a.lan_ip, lan_ip=None)
        # A storeless client's (or a would-be seeder's) claim is nobody's LAN: dropped.
        lan_ip = a.lan_ip if store not in (None, CENTRAL) else None
        return dataclasses.replace(a, store=store, lan_ip=lan_ip)

    def _trusted_proxy(self, ip: str) -> bool:
        trusted = self._trusted.get(ip)
        if trusted is None:
            address = ipaddress.ip_address(ip)
            trusted = any(address in n for n in self._proxies if n.version == address.version)
            if len(self._trusted) >= MAX_ADDRESSES:
                self._trusted.clear()
            self._trusted[ip] = trusted
        return trusted
