"""posswarm-tracker: BitTorrent tracker with store-aware peer hand-out and per-store stats."""
