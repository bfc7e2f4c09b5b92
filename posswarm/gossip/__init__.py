"""Store-LAN gossip: authenticated frames, replay protection and the messages they carry."""
