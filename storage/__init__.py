"""Content addressing (embedded block store, IPFS daemons), the outbox, the chain client and contracts."""
