"""Who may tell a store node what: every kind against every certified role, and a push's sales by their till."""

from __future__ import annotations

import pytest

from posswarm.gossip.messages import SalesAck, SalesDigest, SalesPush, SkuDigest, SkuEntries, SkuRequest
from posswarm.sales.model import Line, Sale, Tender
from posswarm.sku.entry import SkuEntry
from posswarm.storedata.permissions import admit


def _sale(device: str, seq: int) -> Sale:
    return Sale(device, "ab" * 16, seq, 1_700_000_000_000, (Line("SKU1", 1, 250),), 250, (Tender("cash", 250),))


MESSAGES = {
    "sales.ack": SalesAck("till-1", "ab" * 16, 3),
    "sales.digest": SalesDigest({("till-1", "ab" * 16): 3}),
    "sku.entries": SkuEntries((SkuEntry("SKU1", 5 << 16, "central", price_cents=1),)),
    "sales.push": SalesPush((_sale("till-2", 1),)),
    "sku.digest": SkuDigest((bytes(16),)),
    "sku.request": SkuRequest((1,)),
}
# (receiver, sender role) -> the kinds it acts on; every other pair is refused.
ACTED_ON = {
    ("device", "cache"): {"sales.ack", "sales.digest", "sku.entries"},
    ("cache", "device"): {"sales.push", "sku.digest", "sku.request"},
}


@pytest.mark.parametrize("receiver", ["device", "cache"])
@pytest.mark.parametrize("sender_role", ["device", "cache"])
@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_each_kind_is_acted_on_only_from_the_certified_role_that_may_send_it(receiver, sender_role, kind):
    message, why = admit(receiver, "till-2", sender_role, MESSAGES[kind])
    if kind in ACTED_ON.get((receiver, sender_role), set()):
        assert message == MESSAGES[kind] and why is None
    else:
        assert message is None and why.startswith(f"{kind} from {sender_role} till-2: a {receiver} acts on it only")


def test_a_push_keeps_only_the_sales_of_the_till_that_sent_it():
    push = SalesPush((_sale("till-2", 1), _sale("till-1", 7), _sale("till-2", 2), _sale("till-3", 1)))
    message, why = admit("cache", "till-2", "device", push)
    assert message == SalesPush((_sale("till-2", 1), _sale("till-2", 2)))
    assert "2 sales of till-1, till-3" in why and "only for its own sales" in why
    message, why = admit("cache", "till-9", "device", SalesPush((_sale("till-1", 1),)))
    assert message is None and "1 sales of till-1" in why
