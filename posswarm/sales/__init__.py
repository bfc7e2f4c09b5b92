"""Sales: the record a till mints, its durable device outbox, and the store cache's ledger."""
