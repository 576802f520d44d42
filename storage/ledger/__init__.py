"""The ledger room: the `Ledger` seam (base), its web3 implementation over an EVM chain, the embedded EVM,
the contracts, reason codes and rewards. Only the web3 implementation touches contract objects."""
