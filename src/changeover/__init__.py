"""Changeover: ship a new game build with zero downtime, from CI to fleet to launcher."""

__version__ = "0.1.0"
