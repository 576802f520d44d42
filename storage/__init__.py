"""Knack storage."""
