"""The release catalog: what central (and, inside a store, the cache) offers, over HTTP."""
