"""The content room: CIDs, UnixFS, CAR files, the embedded block store, IPFS daemons and remote pinning.
It knows bytes and directories, never chains or what a clip means."""
