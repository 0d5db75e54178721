"""ECR (botocore) errors as the interface's typed errors: by error code (also the codes of
``failures[]`` entries), else by HTTP status; client-side botocore errors by their type."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from .base import (
    Denied,
    Invalid,
    NotFound,
    RegistryError,
    Throttled,
    Unauthorized,
    Unavailable,
    error_class,
)

_AWS_CODES: dict[type[RegistryError], frozenset[str]] = {
    NotFound: frozenset(
        {
            "RepositoryNotFoundException",
            "ImageNotFoundException",
            "ImageNotFound",
            "LayersNotFoundException",
            "LayerInaccessibleException",
            "UploadNotFoundException",
            "LifecyclePolicyNotFoundException",
            "RepositoryPolicyNotFoundException",
            "RegistryPolicyNotFoundException",
            "ReferencedImagesNotFoundException",
            "ScanNotFoundException",
        }
    ),
    Unauthorized: frozenset(
        {
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "ExpiredTokenException",
            "ExpiredToken",
            "InvalidClientTokenId",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
        }
    ),
    Denied: frozenset(
        {"AccessDeniedException", "AccessDenied", "ImageTagAlreadyExistsException", "UpstreamAccessDenied"}
    ),
    Throttled: frozenset(
        {
            "ThrottlingException",
            "Throttling",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "UpstreamTooManyRequests",
        }
    ),
    Unavailable: frozenset(
        {
            "ServerException",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "InternalFailure",
            "InternalServerError",
            "UpstreamUnavailable",
            "UnableToGetUpstreamLayerException",
        }
    ),
    Invalid: frozenset(
        {
            "InvalidParameterException",
            "ValidationException",
            "InvalidLayerException",
            "InvalidLayerPartException",
            "LayerPartTooSmallException",
            "EmptyUploadException",
            "ImageDigestDoesNotMatchException",
            "InvalidTagParameterException",
            "TooManyTagsException",
            "InvalidImageDigest",
            "InvalidImageTag",
            "MissingDigestAndTag",
            "ImageTagDoesNotMatchDigest",
            "ImageReferencedByManifestList",
        }
    ),
}
_CODE_CLASS = {code: cls for cls, codes in _AWS_CODES.items() for code in codes}


def aws_problem(exc: Exception) -> str:
    """'Code: message' of a botocore error, for messages that name the problem."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def aws_code_class(code: str | None) -> type[RegistryError]:
    """The error class for an ECR error or ``failures[]`` code."""
    return _CODE_CLASS.get(code or "", RegistryError)


def aws_error_class(exc: Exception) -> type[RegistryError]:
    """The error class for a botocore exception: by error code, else by HTTP status."""
    if isinstance(exc, ClientError):
        cls = aws_code_class(exc.response.get("Error", {}).get("Code"))
        if cls is not RegistryError:
            return cls
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return error_class(status) if status and status != 400 else RegistryError
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Unauthorized
    if isinstance(exc, ParamValidationError):
        return Invalid
    if isinstance(exc, ConnectionError | HTTPClientError):
        return Unavailable
    return RegistryError
