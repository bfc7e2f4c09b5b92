"""Store peer discovery: mDNS adverts (records, pure) and the zeroconf-to-trio bridge (mdns)."""
