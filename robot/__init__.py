"""Knack robot."""
