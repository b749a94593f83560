"""Shared kernel of the monolith: its settings.

Sessions, constraint naming, authentication, money and health probes come from the strangler
toolkit, which the extracted service uses too.

Capabilities may import it; it imports no capability.
"""
