"""The SKU catalog replica every store node keeps: HLC-stamped last-writer-wins entries."""
