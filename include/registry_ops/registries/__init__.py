"""Registry adapters behind one interface (:class:`base.Registry`)."""

from .base import DeleteResult, Manifest, Registry, RegistryError

__all__ = ["DeleteResult", "Manifest", "Registry", "RegistryError"]
