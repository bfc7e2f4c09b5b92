"""The SKU part of central's failover in netsim: a price imported at central before one seeder is killed and changed
after it, timed until every store's cache holds the change."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

from tools.bench_sku import Replicas
from tools.lab import bin_path
from tools.netsim.network import Network

PRICE_CODE, PRICE_BEFORE, PRICE_AFTER = "FAILOVER-1", 100, 95
SAMPLE_S = 0.1  # the caches' replicas are files: a look costs a query each


class Prices:
    """A price imported at central (``posswarm-seeder sku import`` in central's namespace) before the kill and changed
    after it, timed until every store's cache holds the change in its replica (DATA_DIR/sku.sqlite)."""

    def __init__(self, net: Network, run_in_central: Callable[[list[str]], Awaitable[str]], sku_db: str) -> None:
        self.net, self.run_in_central, self.sku_db = net, run_in_central, sku_db
        caches = {store.cache.node_id: store.cache for store in net.topo.stores}
        self.replicas = Replicas(None, path_of=lambda name: net.data_dir(caches[name]) / "sku.sqlite")
        self.caches = list(caches)
        self.reached = trio.Event()
        self.began = self.ended = self.every_cache = None

    async def set(self, cents: int) -> None:
        csv = self.net.workdir / f"price-{cents}.csv"
        csv.write_text(f"code,barcode,name,price_cents,tax_class\n{PRICE_CODE},,failover price,{cents},A\n")
        await self.run_in_central([bin_path("posswarm-seeder"), "sku", "import", str(csv), "--sku-db", self.sku_db])

    async def change_after_kill(self, killed_at: Callable[[], float | None]) -> None:
        while killed_at() is None:
            await trio.sleep(SAMPLE_S)
        self.began = time.monotonic()
        async with trio.open_nursery() as importing:
            importing.start_soon(self._change)
            # Looked at while the import runs: the caches may hold the change before the CLI has exited.
            while not all(self.replicas.price(cache, PRICE_CODE) == PRICE_AFTER for cache in self.caches):
                await trio.sleep(SAMPLE_S)  # reads files only
            self.every_cache = time.monotonic()
        self.reached.set()

    async def _change(self) -> None:
        await self.set(PRICE_AFTER)
        self.ended = time.monotonic()

    def result(self, killed_at: float) -> dict:
        holding = sum(self.replicas.price(c, PRICE_CODE) == PRICE_AFTER for c in self.caches)
        self.replicas.close()
        return {
            "imported_after_kill_s": None if self.began is None else round(self.began - killed_at, 2),
            "import_ran_s": None if self.ended is None else round(self.ended - self.began, 2),
            "every_cache_s": None if self.every_cache is None else round(self.every_cache - self.began, 2),
            "caches_holding": holding,
            "caches": len(self.caches),
            "note": "a price change imported into the seeders' shared PostgreSQL catalog after seeder-1 was killed, "
                    f"from the import's start until every cache's replica held it (sampled every {SAMPLE_S} s)",
        }
