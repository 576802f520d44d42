"""The outbox room: the SQLite outbox that drives every clip from recorded to settled (db, with its states
in states), and its steps: pin to the content store (pinner), submit to the ledger and read settlements back
(submitter), one chain round (settlement), an operator's discard, and the thread skeleton they share (rounds)."""
