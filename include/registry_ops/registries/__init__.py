"""Registry adapters behind one interface (:class:`base.Registry`): ECR (``ecr``), the
distribution API (``oci``) and OCI image layout directories (``ocilayout``)."""

from .base import (
    Capabilities,
    DeleteResult,
    Denied,
    Descriptor,
    Invalid,
    Manifest,
    ManifestHead,
    NotFound,
    Page,
    Registry,
    RegistryError,
    RepositorySettings,
    Throttled,
    Unauthorized,
    Unavailable,
    Unsupported,
)

__all__ = [
    "Capabilities",
    "DeleteResult",
    "Denied",
    "Descriptor",
    "Invalid",
    "Manifest",
    "ManifestHead",
    "NotFound",
    "Page",
    "Registry",
    "RegistryError",
    "RepositorySettings",
    "Throttled",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
]
