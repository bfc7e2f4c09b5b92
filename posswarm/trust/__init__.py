"""Central's roles and keys (TUF): the root of trust every node holds, and the signed, fresh state it follows."""
