"""Calls between processes and nodes: the wire they share (wire.py). ARCHITECTURE.md, Folders."""
