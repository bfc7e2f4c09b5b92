"""A/B boot slots for OS images: the slot state kept in the bootloader environment, its drivers, the slot writer."""
