"""Who may tell a store node what over gossip: the sender's certified role decides, and a till speaks only for
its own sales (pure)."""

from __future__ import annotations

from posswarm.gossip.messages import Message, SalesAck, SalesDigest, SalesPush, SkuDigest, SkuEntries, SkuRequest

# receiver's role -> kind -> the sender roles it is acted on from. Heartbeats and hellos are the driver's.
HEARD: dict[str, dict[str, frozenset[str]]] = {
    # Only the store's certified cache acks a till's sales (an ack lets the till forget them) and hands it
    # the catalog; a fellow till's copy of either is refused, whatever its frames claim.
    "device": {SalesAck.KIND: frozenset({"cache"}), SalesDigest.KIND: frozenset({"cache"}),
               SkuEntries.KIND: frozenset({"cache"})},
    # The cache takes sales and catalog questions from the tills; central is its only catalog writer.
    "cache": {SalesPush.KIND: frozenset({"device"}), SkuDigest.KIND: frozenset({"device"}),
              SkuRequest.KIND: frozenset({"device"})},
}


def admit(receiver_role: str, sender: str, sender_role: str, message: Message) -> tuple[Message | None, str | None]:
    """(what the receiver acts on, or None; a one-line reason for what it refused, or None).

    A sales push keeps the sales of the device its sender's certificate names; the others are refused
    (without sales signed by their till, a carried copy is indistinguishable from a forgery).
    """
    allowed = HEARD.get(receiver_role, {}).get(message.KIND, frozenset())
    if sender_role not in allowed:
        who = " or ".join(sorted(allowed)) or "no store node"
        return None, (f"{message.KIND} from {sender_role} {sender}: a {receiver_role} acts on it only from "
                      f"the store's certified {who}; dropped")
    if isinstance(message, SalesPush):
        own = tuple(sale for sale in message.sales if sale.device_id == sender)
        if len(own) < len(message.sales):
            others = sorted({sale.device_id for sale in message.sales} - {sender})
            return SalesPush(own) if own else None, (
                f"sales.push from {sender}: {len(message.sales) - len(own)} sales of {', '.join(others[:3])[:120]}; "
                "a till speaks only for its own sales, those are not stored or acked")
    return message, None
