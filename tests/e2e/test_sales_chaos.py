"""Chaos: tills sell while frames are dropped/duplicated/reordered, nodes are SIGKILLed and the cache is down a while."""

from __future__ import annotations

import random

from tools.bench_sales import run_scenario


async def test_every_committed_sale_reaches_central_exactly_once(tmp_path):
    seed = random.getrandbits(32)
    result = await run_scenario(
        tmp_path, devices=3, sales=900, rate=25, drop=0.3, dup=0.1, reorder=0.1,
        kill_every=2.0, cache_outage=8.0, drain_timeout=45.0, seed=seed,
    )
    why = f"seed {seed}: {result}"
    assert result["device_kills"] >= 1 and result["cache_kills"] >= 1 and result["outages"] == 1, why
    assert result["committed"] >= 900, why
    assert result["lost"] == 0, why
    assert result["duplicated"] == 0 and result["unknown_at_central"] == 0, why
    # Sales committed but killed before the POS heard back are in an outbox: they must arrive too.
    assert result["at_central"] == result["in_outboxes"] == result["at_cache"], why
    assert result["central_cents"] == result["outbox_cents"], why
    assert result["committed_cents"] <= result["central_cents"], why
