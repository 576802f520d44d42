"""Headless streaming for robots: runs the collector pipeline as a service (signals, health, metrics)."""
