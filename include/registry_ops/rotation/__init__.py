"""Credential rotation: the CI service accounts' IAM access keys kept in Secrets Manager
(``keys``), and the password of a basic-auth user in an htpasswd file the deployment owns
(``htpasswd``). Every step is derived from the state read back from IAM, Secrets Manager and
the file, so a run that crashed anywhere is finished by running again."""
