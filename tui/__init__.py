"""Knack tui."""
