"""Knack collector: capture, clip bundles, labeling and filtering on the device."""

__version__ = "0.2.0"
