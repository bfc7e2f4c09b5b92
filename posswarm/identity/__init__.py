"""Node identities: central-signed certificates naming a node's store, role and class."""
