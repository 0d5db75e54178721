"""Test-only shim: moto 5 lacks ECR's pull-through cache rule calls (``DescribePullThroughCacheRules``
and ``CreatePullThroughCacheRule`` answer HTTP 500, which botocore retries for ~8 s), which the
backup reads as part of an ECR registry's settings. This answers them from a dict on moto's ECR
backend, in this process (moto runs in-process), with the fields AWS returns that the backup
keeps. Like the paging and layer shims, it changes nothing moto already implements.

``MotoService`` turns it on; nothing outside the local stack imports it.
"""

from __future__ import annotations

from typing import Any


def enable_pull_through_cache_rules() -> None:
    """Test-only: moto 5 lacks ``DescribePullThroughCacheRules`` and ``CreatePullThroughCacheRule``
    (HTTP 500). Answer them from a dict on moto's ECR backend, in this process (moto runs
    in-process), as AWS does for the fields the backup keeps."""
    from moto.core.responses import ActionResult
    from moto.ecr.responses import ECRResponse

    if getattr(ECRResponse, "_backup_ptc", False):
        return

    def rules(self: Any) -> dict[str, dict[str, Any]]:
        backend = self.ecr_backend
        if not hasattr(backend, "pull_through_cache_rules"):
            backend.pull_through_cache_rules = {}
        return backend.pull_through_cache_rules

    def create(self: Any) -> ActionResult:
        prefix = self._get_param("ecrRepositoryPrefix")
        held = rules(self)
        if prefix in held:
            from moto.ecr.exceptions import ServiceException

            class PullThroughCacheRuleAlreadyExistsException(ServiceException):
                code = "PullThroughCacheRuleAlreadyExistsException"

            raise PullThroughCacheRuleAlreadyExistsException(f"rule {prefix} exists")
        rule = {
            k: self._get_param(k)
            for k in ("ecrRepositoryPrefix", "upstreamRegistryUrl", "upstreamRegistry", "credentialArn")
            if self._get_param(k)
        }
        held[prefix] = {**rule, "registryId": self.current_account}
        return ActionResult(held[prefix])

    def describe(self: Any) -> ActionResult:
        return ActionResult({"pullThroughCacheRules": [dict(r) for _, r in sorted(rules(self).items())]})

    ECRResponse.create_pull_through_cache_rule = create
    ECRResponse.describe_pull_through_cache_rules = describe
    ECRResponse._backup_ptc = True
