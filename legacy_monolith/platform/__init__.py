"""Shared kernel of the monolith: settings, authentication, constraint naming.

Database sessions and money come from the strangler toolkit, which the extracted service uses
too.

Capabilities may import it; it imports no capability.
"""
