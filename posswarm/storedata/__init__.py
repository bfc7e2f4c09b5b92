"""Store data on a node: sales from tills to the cache to central, the SKU catalog from central to every till."""
