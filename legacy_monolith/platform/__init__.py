"""Shared kernel of the monolith: settings and constraint naming.

Sessions, authentication, money and health probes come from the strangler toolkit, which the
extracted service uses too.

Capabilities may import it; it imports no capability.
"""
