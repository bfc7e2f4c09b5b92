"""How a sale is kept in a SQLite row (outbox, ledger, central): its own numbered format, apart from the wire form.

The gossip and ingest wire form may change with a release; a stored row must still read after
that, without rewriting every store's files. So each row's body starts with its format number:

- format 0: rows written before formats were numbered (posswarm <= 2026.11): the body is the
  7-item wire list ``[device_id, incarnation, seq, created_ms, lines, total_cents, tenders]``.
- format 1: ``[1, device_id, incarnation, seq, created_ms, lines, total_cents, tenders]``.
- format 2: format 1's fields, then ``txn`` (the POS's transaction id).

Upgrade path: a new format gets a new number and reader here; :func:`unpack` reads every format it
knows, so old rows stay as they are and read forever. :func:`pack` writes the oldest format that
holds the sale (a sale without a txn is still format 1), so a node rolled back to the release
before a format reads every row that does not need it. A row in a format newer than this code is
refused with a one-line error (an older posswarm never guesses).
"""

from __future__ import annotations

import msgpack

from posswarm.sales.model import InvalidSale, Sale

FORMAT = 2  # the newest this code writes and reads
_FIELDS = {0: 7, 1: 7, 2: 8}


def pack(sale: Sale) -> bytes:
    """The row body for ``sale`` in the oldest format that holds it."""
    # Lines and tenders are tuples: msgpack writes them as the same arrays a list would be.
    fields = [sale.device_id, sale.incarnation, sale.seq, sale.created_ms, sale.lines, sale.total_cents, sale.tenders]
    return msgpack.packb([1, *fields] if sale.txn is None else [2, *fields, sale.txn])


def unpack(body: bytes) -> Sale:
    """The sale in a row body of any known format; anything else raises :class:`InvalidSale`."""
    try:
        doc = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several types on garbage; all mean a damaged row
        raise InvalidSale(f"stored sale: row body is not msgpack ({type(exc).__name__}); the file is damaged") from None
    if not isinstance(doc, list) or not doc:
        raise InvalidSale("stored sale: row body is not a list; the file is damaged")
    number, fields = (doc[0], doc[1:]) if type(doc[0]) is int else (0, doc)
    if number not in _FIELDS:
        raise InvalidSale(
            f"stored sale: row format {number} is not one this posswarm reads (up to {FORMAT}); upgrade posswarm"
        )
    if len(fields) != _FIELDS[number]:
        raise InvalidSale(
            f"stored sale: row has {len(fields)} fields, format {number} needs {_FIELDS[number]}; the file is damaged"
        )
    return Sale.from_fields(*fields)
