"""The outbox room: the SQLite outbox that drives every clip from recorded to settled (states), and its
steps — pin to the content store (pinner), submit to the ledger and read settlements back (submitter),
one chain round (settlement), and an operator's discard."""
from storage.outbox.states import DISCARDABLE, STATES, Entry, Outbox, backoff

__all__ = ["DISCARDABLE", "STATES", "Entry", "Outbox", "backoff"]
