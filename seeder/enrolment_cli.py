"""``posswarm-seeder enroll`` (a node's credential, made at central), ``enroll-token`` (a one-time token a till
trades for its own credential with ``posswarm enroll``), and ``enroll-revoke``/``enroll-revoked`` (central's
signed list of revoked node certificates)."""

from __future__ import annotations

import datetime
from pathlib import Path

from posswarm.errors import PosswarmError
from posswarm.identity.certificate import ROLES, check_names
from posswarm.identity.revocations import MAX_REASON, Revocation
from posswarm.keys import load_private_key
from posswarm.wallclock import now_ms
from seeder import enrolment


def add_command(sub) -> None:
    e = sub.add_parser("enroll", help="issue a node's own key and certificate into a directory (offline provisioning)")
    e.add_argument("node_id", help="the node's id (node.id in its config)")
    e.add_argument("--store", required=True, help="the node's store id")
    e.add_argument("--role", required=True, choices=ROLES)
    e.add_argument("--class", dest="device_class", required=True, help="device class: pos, kiosk, cache, ...")
    e.add_argument("--keys", required=True, type=Path, help="central's keys directory (enrolment.key, enrolment-ca.crt)")
    e.add_argument("--out", required=True, type=Path, help="directory for node.key, node.crt, authority.crt "
                   "(the node's node.identity_dir)")

    t = sub.add_parser("enroll-token", help="a one-time, expiring token a node trades for its credential "
                       "(`posswarm enroll --central URL --token T`)")
    t.add_argument("--store", required=True, help="the store the token enrols a node into")
    t.add_argument("--role", required=True, choices=ROLES)
    t.add_argument("--class", dest="device_class", default="", help="the node's device class (default: the one it asks)")
    t.add_argument("--ttl-s", type=float, default=86400.0, help="seconds the token stays usable (default: 1 day)")
    t.add_argument("--data-dir", "--data", dest="data_dir", type=Path, required=True,
                   help="the running seeder's --data-dir (default there: RELEASES/../central-data)")

    r = sub.add_parser("enroll-revoke", help="revoke a node's certificates in central's signed state (a stolen till "
                       "or cache); every node and central refuse it within a poll")
    r.add_argument("node_id", help="the node's id (node.id in its config)")
    r.add_argument("--store", required=True, help="the node's store id (node ids repeat across stores)")
    r.add_argument("--reason", default="", help=f"one line kept in the list and logged by whoever refuses the node "
                   f"(at most {MAX_REASON} characters)")
    listing = sub.add_parser("enroll-revoked", help="list the node certificates central's signed state revokes")
    for a in (r, listing):
        a.add_argument("--releases", required=True, type=Path, help="releases directory (the seeder's RELEASES)")
    r.add_argument("--keys", required=True, type=Path, help="central's keys directory (targets.key, snapshot.key)")


def run_enroll(args) -> int:
    out = enrolment.enrol(args.keys, args.out, node_id=args.node_id, store=args.store, role=args.role,
                          device_class=args.device_class)
    print(f"enrolled {args.role} {args.node_id} of store {args.store} (class {args.device_class}) -> {out} "
          f"(set node.identity_dir = {str(out)!r})")
    return 0


def run_token(args) -> int:
    from seeder.enrolment_tokens import TokenBook

    book = TokenBook(args.data_dir)
    try:
        token, _ = book.issue(store=args.store, role=args.role, device_class=args.device_class, ttl_s=args.ttl_s)
    finally:
        book.close()
    print(token)  # alone on stdout, so a provisioning script can take it as it is
    return 0


def run_revoke(args) -> int:
    from seeder.tuf_repository import Repository

    check_names(args.node_id, args.store, "device", "any-class")
    if len(args.reason) > MAX_REASON or "\n" in args.reason:
        raise PosswarmError(f"--reason: one line of at most {MAX_REASON} characters")
    repo = Repository(args.releases)
    entry = Revocation(args.store, args.node_id, now_ms() // 1000, args.reason)
    version, new = repo.revoke_node(entry, load_private_key(args.keys / "targets.key"),
                                    load_private_key(args.keys / "snapshot.key"))
    if not new:
        print(f"node {args.node_id} of store {args.store}: already revoked; targets re-signed as version {version}")
        return 0
    print(f"revoked node {args.node_id} of store {args.store} (every certificate issued until now) in targets "
          f"version {version}; the running seeder publishes it within a second, nodes refuse it at their next poll")
    return 0


def run_revoked(args) -> int:
    from seeder.tuf_repository import Repository

    for r in Repository(args.releases).revoked():
        at = datetime.datetime.fromtimestamp(r.revoked_at, datetime.UTC)
        print(f"{r.store}\t{r.node_id}\t{at:%Y-%m-%dT%H:%M:%SZ}\t{r.reason}")
    return 0
