"""A clip's states in the outbox, in order (DESIGN.md): plain names, importable without the database.

recorded -> labeled -> rejected | accepted -> pinned -> submitted -> settled"""

STATES = ("recorded", "labeled", "rejected", "accepted", "pinned", "submitted", "settled")
# Before pinning a clip is the device's alone and may be thrown away; from then on it is shared and kept.
DISCARDABLE = ("recorded", "labeled", "rejected", "accepted")
PENDING = ("accepted", "pinned", "submitted")
