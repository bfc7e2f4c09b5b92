"""Which of the catalog's buckets a SKU code falls in: the unit of anti-entropy and of central's snapshot."""

from __future__ import annotations

import blake3

# 2^10 buckets: ~100 SKUs each at 10^5 SKUs, so one changed SKU costs one bucket's worth of
# entries, and the digest list is 16 KiB (notes/gossip-mdns.md §1). Both ends must agree.
BUCKETS = 1024


def bucket_of(code: str, buckets: int = BUCKETS) -> int:
    return int.from_bytes(blake3.blake3(code.encode()).digest(8), "big") % buckets
