"""Shared kernel of the monolith: settings, database sessions, authentication, money.

Capabilities may import it; it imports no capability.
"""
