"""posswarm-netsim: an emulated network of stores (network namespaces, shaped links) running the real processes."""
