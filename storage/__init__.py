"""Storage in three rooms: content (CIDs, UnixFS, block stores, IPFS), outbox (every clip from recorded to
settled) and ledger (the chain seam, its web3 implementation, contracts); and the validator over them."""
