"""Consent-aware propensity scoring for retail banks."""

__version__ = "0.1.0"
