"""The validator (DESIGN.md, "Trust"): re-derives each submitted clip's verdict from its content and settles."""

from storage.validator.validator import NetworkMismatch, Validator, Verdict

__all__ = ["NetworkMismatch", "Validator", "Verdict"]
