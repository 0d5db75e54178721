"""Subcommands of ``registry-ops``, one module each.

A module defines ``add_parser(subparsers)``, which adds its parser(s) and sets ``func``: a
function taking the parsed args and returning ``(exit_code, result)``. ``cli.py`` prints a
``str`` result as is and anything else as JSON, on stdout; logs go to stderr.
"""
