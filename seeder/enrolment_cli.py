"""``posswarm-seeder enroll`` (a node's credential, made at central) and ``enroll-token`` (a one-time token a till
trades for its own credential with ``posswarm enroll``)."""

from __future__ import annotations

from pathlib import Path

from posswarm.identity.certificate import ROLES
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
