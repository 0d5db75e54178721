"""Backups of the fleet's registries and restores from them (the backup issue).

``catalog``: the per-registry document a snapshot holds; the rest of the package writes
snapshots into the one blob store and restores registries from them.
"""
