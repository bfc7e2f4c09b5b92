"""Central's signature on SKU entries: only what a key of the root's SKU role signed is applied, and
central stamps anew whatever it signs, so every replica takes the signed entry as a change."""

import sqlite3
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from posswarm.keys import KeyRing, key_id
from posswarm.sku.catalog import SkuReplica
from posswarm.sku.entry import InvalidSkuEntry, SkuEntry
from posswarm.sku.hlc import pack
from posswarm.sku.signature import SkuSignatures, problem, sign
from seeder.sku import CentralCatalog

T = 1_700_000_000_000
CENTRAL = Ed25519PrivateKey.generate()
ROGUE = Ed25519PrivateKey.generate()


def _pen(price: int, counter: int = 0) -> SkuEntry:
    return SkuEntry("SKU1", pack(T, counter), "central", barcode="4006381333931", name="Pen", price_cents=price)


def _ring(*keys) -> KeyRing:
    return KeyRing([k.public_key() for k in keys])


def test_a_signed_entry_passes_and_every_change_to_it_is_named():
    keys = _ring(CENTRAL)
    good = sign(_pen(150), CENTRAL)
    assert problem(good, keys) is None
    assert "does not match" in problem(replace(good, price_cents=1), keys)  # a proxy rewrote the price
    assert "does not match" in problem(replace(good, hlc=good.hlc + 1), keys)  # or the stamp, to win LWW
    assert "unsigned" in problem(_pen(150), keys)
    forged = sign(_pen(1, 1), ROGUE)  # a store node signing with its own key
    assert f"signed by key {key_id(ROGUE.public_key())}, not the root of trust's SKU key" in problem(forged, keys)
    claimed = replace(forged, key_id=key_id(CENTRAL.public_key()))  # ... or claiming central's key id
    assert "does not match" in problem(claimed, keys)


def test_the_wire_form_carries_the_signature_and_an_old_sender_parses_as_unsigned():
    good = sign(_pen(150), CENTRAL)
    assert SkuEntry.from_wire(good.to_wire()) == good
    old = SkuEntry.from_wire(good.content())
    assert old.signature == b"" and old.key_id == ""
    for wire in (good.to_wire()[:9], [*good.content(), "nothex!", good.signature],
                 [*good.content(), good.key_id, good.signature[:10]]):
        with pytest.raises(InvalidSkuEntry):
            SkuEntry.from_wire(wire)
    assert good.leaf == _pen(150).leaf  # the bucket digests hash what the entry says, not who signed it


def test_a_forged_entry_never_replaces_a_good_one_and_is_counted():
    replica = SkuReplica(":memory:")
    signatures = SkuSignatures(_ring(CENTRAL))
    good = sign(_pen(150), CENTRAL)
    assert replica.apply([good], check=lambda e: signatures.accepted(e, source="cache")) == 1
    newer_forged = [sign(_pen(1, 5), ROGUE), replace(sign(_pen(150, 6), CENTRAL), price_cents=2), _pen(3, 7)]
    assert replica.apply(newer_forged, check=lambda e: signatures.accepted(e, source="till-9")) == 0
    assert replica.entry("SKU1") == good
    assert signatures.refused == 3 and "SKU1" in signatures.last_refusal
    # A repeat of what is held is not checked again (nor counted): only entries that would win are.
    assert replica.apply([good], check=lambda e: signatures.accepted(e, source="cache")) == 0
    assert signatures.refused == 3


def test_a_good_entry_in_the_same_batch_as_a_forged_newer_one_is_still_applied():
    replica = SkuReplica(":memory:")
    signatures = SkuSignatures(_ring(CENTRAL))
    good, forged = sign(_pen(150), CENTRAL), sign(_pen(1, 9), ROGUE)
    assert replica.apply([forged, good], check=lambda e: signatures.accepted(e, source="x")) == 1
    assert replica.entry("SKU1") == good


def test_after_rotation_the_node_takes_the_new_key_and_refuses_the_old_one():
    new = Ed25519PrivateKey.generate()
    ring = _ring(CENTRAL)
    signatures = SkuSignatures(ring)
    ring.replace([new.public_key()])  # what CentralTrust does when a rotated root verifies
    assert signatures.accepted([sign(_pen(150), new)], source="cache") != []
    assert signatures.accepted([sign(_pen(150), CENTRAL)], source="cache") == []


def _catalog(tmp_path) -> CentralCatalog:
    catalog = CentralCatalog(str(tmp_path / "sku.sqlite"))
    rows = [{"code": f"SKU{i}", "barcode": f"40{i}", "name": f"item {i}", "price_cents": 100 + i, "tax_class": "A",
             "deleted": False, "line": i + 2} for i in range(30)]
    catalog.import_rows(rows, now_ms=T)
    return catalog


def test_central_serves_only_signed_entries_each_stamped_after_all_it_served_before(tmp_path):
    catalog = _catalog(tmp_path)
    assert catalog.page(0)["entries"] == [] and catalog.newest_signed() == 0  # nothing signed: no long poll wakes
    signed, after = catalog.sign_pending(CENTRAL, now_ms=T, limit=20)
    assert signed == 20
    first = catalog.page(0)
    assert len(first["entries"]) == 20 and catalog.newest_signed() > 0
    assert catalog.sign_pending(CENTRAL, after_hlc=after, now_ms=T, limit=20)[0] == 10
    assert catalog.sign_pending(CENTRAL, after_hlc=0, now_ms=T)[0] == 0  # nothing left to sign
    rest = catalog.page(first["cursor"])["entries"]
    assert len(rest) == 10  # a cache resuming from its cursor gets the ten signed later
    keys = _ring(CENTRAL)
    assert all(problem(SkuEntry.from_wire(w), keys) is None for w in first["entries"] + rest)
    catalog.close()


def test_a_rotated_key_restamps_and_resigns_the_whole_catalog(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.sign_pending(CENTRAL, now_ms=T)
    cursor = catalog.page(0)["cursor"]  # a cache that has everything signed by the old key
    new = Ed25519PrivateKey.generate()
    assert catalog.sign_pending(new, now_ms=T)[0] == 30
    changes = [SkuEntry.from_wire(w) for w in catalog.page(cursor)["entries"]]
    assert len(changes) == 30 and all(problem(e, _ring(new)) is None for e in changes)
    assert all(e.hlc > cursor for e in changes)  # past the cache's cursor, and newer than what it holds
    catalog.close()


def test_an_import_while_the_seeder_signs_is_never_lost(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.sign_pending(CENTRAL, now_ms=T)
    # The import CLI writes through its own connection; its stamp is above the signer's newest one.
    cli = CentralCatalog(str(tmp_path / "sku.sqlite"))
    cli.import_rows([{"code": "SKU3", "barcode": "403", "name": "item 3", "price_cents": 999, "tax_class": "A",
                      "deleted": False, "line": 2}], now_ms=T)
    cli.close()
    new = Ed25519PrivateKey.generate()
    catalog.sign_pending(new, now_ms=T)  # a rotation re-signs everything, the new price included
    assert catalog.replica.entry("SKU3").price_cents == 999
    catalog.close()


def test_a_replica_written_before_signatures_opens_with_its_entries_unsigned(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE sku (code TEXT PRIMARY KEY, bucket INTEGER NOT NULL, hlc INTEGER NOT NULL,
        origin TEXT NOT NULL, deleted INTEGER NOT NULL, barcode TEXT NOT NULL, name TEXT NOT NULL,
        price_cents INTEGER NOT NULL, tax_class TEXT NOT NULL, leaf BLOB NOT NULL) WITHOUT ROWID;""")
    entry = _pen(150)
    db.execute("INSERT INTO sku VALUES (?, 0, ?, 'central', 0, ?, 'Pen', 150, '', ?)",
               (entry.code, entry.hlc, entry.barcode, entry.leaf))
    db.commit()
    db.close()
    replica = SkuReplica(str(path))
    assert replica.entry("SKU1") == entry and replica.entry("SKU1").signature == b""
    signed = sign(_pen(150, 1), CENTRAL)
    assert replica.apply([signed]) == 1 and replica.entry("SKU1") == signed
    replica.close()


def test_the_largest_signed_entries_still_fit_a_gossip_frame_in_every_batch():
    from posswarm.gossip import frames
    from posswarm.gossip.messages import SkuEntries
    from posswarm.storedata.sku_sync import batches

    widest = [sign(SkuEntry(f"{i:064d}", pack(T, i), "o" * 64, False, "b" * 64, "\U0001f600" * 256, 2**53 - 1,
                            "t" * 32), CENTRAL) for i in range(600)]
    cut = list(batches(widest))
    for batch in cut:
        frame = frames.encode(SkuEntries(batch), sender="till-1", counter=1)
        assert len(frame) <= frames.MAX_FRAME
    assert len(cut) > 1 and sum(map(len, cut)) == 600


async def test_the_seeder_signs_with_its_key_file_and_warns_when_the_root_names_another(nursery, tmp_path):
    import trio
    from structlog.testing import capture_logs

    from seeder import sku
    from seeder.keys_cli import init_keys
    from seeder.tuf_repository import Repository

    keys = init_keys(tmp_path / "keys", tmp_path / "releases")
    catalog = _catalog(tmp_path)
    stray = tmp_path / "stray.key"
    stray.write_bytes(keys.key("timestamp").read_bytes())  # a key of central's, but not the SKU role's
    with capture_logs() as logged:
        await nursery.start(sku.sign_forever, catalog, stray, Repository(tmp_path / "releases"))
    assert [e["event"] for e in logged if e["log_level"] == "warning"] == ["sku.key_not_in_root"]
    with capture_logs() as logged:
        await nursery.start(sku.sign_forever, CentralCatalog(str(tmp_path / "other.sqlite")), keys.key("sku"),
                            Repository(tmp_path / "releases"))
    assert not [e for e in logged if e["log_level"] == "warning"]
    with trio.fail_after(30):  # the stray key's signer still signs: the warning is the remedy
        while True:
            async with catalog.lock:  # one connection, shared with the signer's worker thread
                if catalog.newest_signed() > 0:
                    break
            await trio.sleep(0.05)


def test_a_node_takes_its_sku_keys_from_the_root_of_trust(tmp_path):
    from posswarm.keys import load_private_key
    from posswarm.trust.client import CentralTrust
    from seeder.keys_cli import init_keys

    keys = init_keys(tmp_path / "keys", tmp_path / "releases")
    trust = CentralTrust(keys.root, tmp_path / "tuf", grace_s=0)
    ring = trust.sku_keys  # the one ring StoreData holds: replaced in place when a newer root verifies
    trust.load()
    assert ring.ids() == [key_id(load_private_key(keys.key("sku")).public_key())]
    assert key_id(load_private_key(keys.key("targets")).public_key()) not in ring.ids()
