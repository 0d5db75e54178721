"""Retention policies: AWS ECR lifecycle rules, validated the way AWS validates them, plus the
platform's extensions, declared per repository in one policy file.

Two file shapes are accepted (YAML or JSON):

- a plain ECR lifecycle policy, ``{"rules": [...]}``: one policy for every repository;
- the wrapper format, ``{"version": 1, "defaults": {...}, "policies": [...]}``: named policies
  applied to repositories by glob (first matching policy wins), each holding ECR ``rules`` plus
  documented extensions, with per-repository ``overrides``.

Rules are kept exactly as AWS documents them so the same text can be attached to an ECR
repository (and drift-checked); the only selector extension inside a rule is ``tagRegexList``.
Every refusal is a :class:`PolicyError` naming the file, the policy, the rule (``rulePriority``)
and the field, because a policy that deletes images must fail loudly and precisely.
See docs/retention-policies.md for the format.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

TAG_STATUSES = ("tagged", "untagged", "any")
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled", "sinceImageTransitioned")
SINCE_TYPES = frozenset(COUNT_TYPES[1:])
STORAGE_CLASSES = ("standard", "archive")
ACTION_TYPES = ("expire", "transition")
TAG_LISTS = ("tagPrefixList", "tagPatternList", "tagRegexList")  # the last one is our extension
MAX_RULES = 50
MAX_POLICY_CHARS = 30_720
MAX_WILDCARDS = 4
RULE_KEYS = frozenset({"rulePriority", "description", "selection", "action"})
SELECTION_KEYS = frozenset({"tagStatus", *TAG_LISTS, "storageClass", "countType", "countUnit", "countNumber"})
ACTION_KEYS = frozenset({"type", "targetStorageClass"})
# Semver releases protected by default: X.Y.Z with an optional leading v, no pre-release.
SEMVER_RELEASE = r"re:^v?\d+\.\d+\.\d+$"
DEFAULT_PROTECT = ("latest", SEMVER_RELEASE)


class PolicyError(ValueError):
    """A policy file is unreadable or invalid; the message names file, policy, rule and field."""


# --------------------------------------------------------------------------- tag matchers


def ecr_pattern_regex(pattern: str) -> str:
    """An ECR ``tagPatternList`` entry as an anchored regex: ``*`` is any run, the rest literal."""
    return "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"


def glob_regex(glob: str) -> str:
    """A tag/repository glob (``*``, ``?``, ``[...]``) as an anchored regex that both Python's
    ``re`` and RE2 (Arrow) accept; ``fnmatch.translate`` emits ``\\Z``, which RE2 rejects."""
    out, i = ["^"], 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in glob[i + 2 :]:
            j = glob.index("]", i + 2)
            body = glob[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


def matcher_regex(entry: str) -> str:
    """An extension matcher (``exclude_tags``, ``protect_tags``): a glob, or ``re:<regex>``."""
    return entry[3:] if entry.startswith("re:") else glob_regex(entry)


def check_regex(regex: str) -> str | None:
    """Why a regex cannot be used (Python ``re`` and RE2 must both accept it), else None."""
    try:
        re.compile(regex)
    except re.error as exc:
        return f"invalid regular expression {regex!r}: {exc}"
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        pc.match_substring_regex(pa.array(["x"]), regex)
    except Exception as exc:  # pyarrow raises ArrowInvalid with RE2's message
        return f"regular expression {regex!r} is not supported by RE2: {exc}"
    return None


def tag_matches(kind: str, entry: str, tag: str) -> bool:
    """Scalar form of the rule selectors (the vectorized planner must agree with it)."""
    if kind == "tagPrefixList":
        return tag.startswith(entry)
    if kind == "tagPatternList":
        return re.match(ecr_pattern_regex(entry), tag, re.DOTALL) is not None
    return re.search(entry, tag) is not None


# --------------------------------------------------------------------------- ECR rules


@dataclass(frozen=True)
class Rule:
    """One ECR lifecycle rule, validated; ``raw`` is the rule as written (for drift and output)."""

    priority: int
    description: str | None
    tag_status: str
    tag_list: str | None  # which of TAG_LISTS, for tagged rules
    tags: tuple[str, ...]
    storage_class: str
    count_type: str
    count_unit: str | None
    count_number: int
    action: str
    target_storage_class: str | None
    raw: Mapping[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def native(self) -> bool:
        """Whether ECR itself can run this rule (``tagRegexList`` is ours)."""
        return self.tag_list != "tagRegexList"

    def selector_text(self) -> str:
        if self.tag_status == "any":
            what = "all images"
        elif self.tag_status == "untagged":
            what = "untagged images"
        else:
            what = f"tagged {self.tag_list} [{', '.join(self.tags)}]"
        return what + (" (archive)" if self.storage_class == "archive" else "")

    def explain(self, acts: bool) -> str:
        """The rule's part of a plan reason: who it selected and why it acts or keeps."""
        head = f"rule {self.priority}" + (f" ({self.description})" if self.description else "")
        n = self.count_number
        if self.count_type == "imageCountMoreThan":
            cond = f"not among the newest {n}" if acts else f"among the newest {n}"
        elif self.count_type == "sinceImagePushed":
            cond = f"pushed more than {n} days ago" if acts else f"pushed within the last {n} days"
        elif self.count_type == "sinceImagePulled":
            cond = (
                f"not pulled (or pushed, if never pulled) for more than {n} days"
                if acts
                else f"pulled or pushed within the last {n} days"
            )
        else:
            cond = f"archived more than {n} days ago" if acts else f"archived within the last {n} days"
        return f"{head}: {self.selector_text()}, {cond}"

    def ecr_json(self) -> dict[str, Any]:
        return dict(self.raw)


def _rule_where(index: int, raw: Any) -> str:
    if isinstance(raw, Mapping) and _int(raw.get("rulePriority")):
        return f"rule rulePriority={raw['rulePriority']}"
    return f"rules[{index}] (no valid rulePriority)"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_rule(raw: Any, where: str) -> Rule:
    """Validate one rule as AWS documents it; errors raise PolicyError prefixed by ``where``."""

    def fail(path: str, problem: str) -> PolicyError:
        return PolicyError(f"{where}: {path}: {problem}")

    def section(name: str, allowed: Any) -> Mapping:
        """``selection`` or ``action``: an object holding only the fields AWS documents."""
        value = raw[name]
        if not isinstance(value, Mapping):
            raise fail(name, "must be an object")
        for key in value:
            if key not in allowed:
                raise fail(f"{name}.{key}", "unknown field")
        return value

    if not isinstance(raw, Mapping):
        raise fail("rule", f"must be an object, got {type(raw).__name__}")
    for key in raw:
        if key not in RULE_KEYS:
            raise fail(key, "unknown field (allowed: rulePriority, description, selection, action)")
    for key in ("rulePriority", "selection", "action"):
        if key not in raw:
            raise fail(key, "required field is missing")
    priority = raw["rulePriority"]
    if not _int(priority) or priority < 1:
        raise fail("rulePriority", f"must be an integer >= 1, got {priority!r}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise fail("description", "must be a string")

    sel = section("selection", SELECTION_KEYS)
    status = sel.get("tagStatus")
    if status not in TAG_STATUSES:
        raise fail("selection.tagStatus", f"must be one of tagged, untagged, any; got {status!r}")
    lists = [k for k in TAG_LISTS if k in sel]
    if status == "tagged" and len(lists) != 1:
        if not lists:
            raise fail(
                "selection.tagPatternList",
                "tagStatus 'tagged' needs exactly one of tagPrefixList or tagPatternList (or tagRegexList)",
            )
        raise fail(f"selection.{lists[1]}", f"cannot be combined with {lists[0]} in one rule")
    if status != "tagged" and lists:
        raise fail(f"selection.{lists[0]}", f"only allowed with tagStatus 'tagged', not {status!r}")
    tags: tuple[str, ...] = ()
    tag_list = lists[0] if lists else None
    if tag_list:
        entries = sel[tag_list]
        if not isinstance(entries, list) or not entries:
            raise fail(f"selection.{tag_list}", "must be a non-empty list of strings")
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                raise fail(f"selection.{tag_list}", f"entries must be non-empty strings, got {entry!r}")
            if tag_list == "tagPatternList" and entry.count("*") > MAX_WILDCARDS:
                raise fail(
                    "selection.tagPatternList",
                    f"{entry!r} has {entry.count('*')} wildcards; at most {MAX_WILDCARDS} '*' per pattern",
                )
            if tag_list == "tagRegexList":
                problem = check_regex(entry)
                if problem:
                    raise fail("selection.tagRegexList", problem)
        tags = tuple(entries)

    count_type = sel.get("countType")
    if count_type not in COUNT_TYPES:
        raise fail("selection.countType", f"must be one of {', '.join(COUNT_TYPES)}; got {count_type!r}")
    unit = sel.get("countUnit")
    if count_type in SINCE_TYPES:
        if unit != "days":
            raise fail("selection.countUnit", f"must be 'days' with countType {count_type}; got {unit!r}")
    elif "countUnit" in sel:
        raise fail("selection.countUnit", "not allowed with countType imageCountMoreThan")
    number = sel.get("countNumber")
    if not _int(number) or number < 1:
        raise fail("selection.countNumber", f"must be an integer >= 1, got {number!r}")
    storage = sel.get("storageClass", "standard")
    if storage not in STORAGE_CLASSES:
        raise fail("selection.storageClass", f"must be 'standard' or 'archive'; got {storage!r}")
    if count_type == "sinceImageTransitioned" and storage != "archive":
        raise fail("selection.storageClass", "must be 'archive' with countType sinceImageTransitioned")
    if count_type != "sinceImageTransitioned" and storage != "standard":
        raise fail("selection.storageClass", f"must be 'standard' with countType {count_type}")

    action = section("action", ACTION_KEYS)
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        raise fail("action.type", f"must be 'expire' or 'transition'; got {kind!r}")
    target = action.get("targetStorageClass")
    if kind == "transition" and target != "archive":
        raise fail("action.targetStorageClass", f"must be 'archive' with action 'transition'; got {target!r}")
    if kind == "expire" and "targetStorageClass" in action:
        raise fail("action.targetStorageClass", "only allowed with action 'transition'")
    if count_type == "sinceImagePulled" and kind != "transition":
        raise fail("action.type", "countType sinceImagePulled can only 'transition' (it cannot expire)")
    if count_type == "sinceImageTransitioned" and kind != "expire":
        raise fail("action.type", "countType sinceImageTransitioned can only 'expire'")
    if kind == "transition" and storage == "archive":
        raise fail("action.type", "images already in the archive storage class cannot transition")
    return Rule(
        priority=priority,
        description=description,
        tag_status=status,
        tag_list=tag_list,
        tags=tags,
        storage_class=storage,
        count_type=count_type,
        count_unit=unit,
        count_number=number,
        action=kind,
        target_storage_class=target,
        raw=json.loads(json.dumps(raw)),
    )


def parse_rules(rules: Any, where: str) -> tuple[Rule, ...]:
    """Validate a rule list as one ECR lifecycle policy (per-rule and whole-policy checks)."""
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"{where}: rules: must be a non-empty list of rules")
    if len(rules) > MAX_RULES:
        raise PolicyError(f"{where}: rules: {len(rules)} rules; a lifecycle policy holds at most {MAX_RULES}")
    text = json.dumps({"rules": rules}, separators=(",", ":"))
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(
            f"{where}: rules: policy text is {len(text)} characters (compact JSON); "
            f"ECR allows at most {MAX_POLICY_CHARS}"
        )
    parsed = [parse_rule(raw, f"{where}: {_rule_where(i, raw)}") for i, raw in enumerate(rules)]
    seen: dict[int, Rule] = {}
    for rule in parsed:
        if rule.priority in seen:
            raise PolicyError(
                f"{where}: rule rulePriority={rule.priority}: rulePriority: must be unique; "
                "two rules use this value"
            )
        seen[rule.priority] = rule
    for storage in STORAGE_CLASSES:
        same = sorted((r for r in parsed if r.storage_class == storage), key=lambda r: r.priority)
        if not same:
            continue
        top = same[-1].priority
        for rule in same:
            if rule.tag_status == "any" and rule.priority != top:
                raise PolicyError(
                    f"{where}: rule rulePriority={rule.priority}: selection.tagStatus: a rule with tagStatus "
                    f"'any' must have the highest rulePriority (for storage class {storage!r}: {top})"
                )
        untagged = [r for r in same if r.tag_status == "untagged"]
        if len(untagged) > 1:
            raise PolicyError(
                f"{where}: rule rulePriority={untagged[1].priority}: selection.tagStatus: only one rule "
                f"may select untagged images per storage class (rule {untagged[0].priority} already does)"
            )
        sets: dict[tuple[str | None, frozenset[str]], int] = {}
        for rule in same:
            if rule.tag_status != "tagged":
                continue
            key = (rule.tag_list, frozenset(rule.tags))
            if key in sets:
                raise PolicyError(
                    f"{where}: rule rulePriority={rule.priority}: selection.{rule.tag_list}: the same "
                    f"tag list as rule {sets[key]}; tag lists must form a unique set per storage class"
                )
            sets[key] = rule.priority
    return tuple(sorted(parsed, key=lambda r: r.priority))


# --------------------------------------------------------------------------- wrapper format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SemverKeep(_Strict):
    """Keep the newest ``keep`` releases per major (``per: major``) or per major.minor."""

    per: Literal["major", "minor"] = "minor"
    keep: int = Field(ge=1)
    include_prerelease: StrictBool = False


class Settings(_Strict):
    """Fields a policy, the file's ``defaults`` or an override may set (unset = inherited)."""

    # Booleans are strict: `enabled: "yes"` or `enabled: 1` is an error, not a silent true.
    enabled: StrictBool | None = None
    max_deletions: int | None = Field(None, ge=0)
    max_fraction: float | None = Field(None, ge=0, le=1)
    rules: list[Any] | None = None
    exclude_tags: list[str] | None = None
    protect_tags: list[str] | None = None
    keep_semver: SemverKeep | None = None
    keep_pulled_within_days: int | None = Field(None, ge=1)
    keep_in_use: StrictBool | None = None
    untag_partial: StrictBool | None = None
    children_follow_index: StrictBool | None = None
    archive_layers: StrictBool | None = None  # read by the executor; None = retention.archive_layers


class Override(Settings):
    repositories: list[str] = Field(min_length=1)


class PolicyModel(Settings):
    name: str = Field(min_length=1)
    description: str | None = None
    registries: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    repositories: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude_repositories: list[str] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)


class FileModel(_Strict):
    version: Literal[1] = 1
    defaults: Settings = Settings()
    policies: list[PolicyModel] = Field(min_length=1)


BUILTIN = {
    "enabled": False,  # new policies start as dry runs
    "max_deletions": None,
    "max_fraction": None,
    "exclude_tags": [],
    "protect_tags": list(DEFAULT_PROTECT),
    "keep_semver": None,
    "keep_pulled_within_days": None,
    "keep_in_use": True,
    "untag_partial": False,
    "children_follow_index": True,
    "archive_layers": None,
}


def repo_match(patterns: Iterable[str], name: str) -> bool:
    """Repository/registry globs: fnmatch (``*`` also crosses ``/``), or ``re:<regex>`` (search)."""
    return any(
        re.search(p[3:], name) is not None if p.startswith("re:") else fnmatch.fnmatchcase(name, p)
        for p in patterns
    )


@dataclass(frozen=True)
class ResolvedPolicy:
    """The effective policy for one repository: its rules and extension settings, all explicit."""

    key: tuple[int, tuple[int, ...]]  # (policy index, override indexes applied): equal keys, equal policy
    name: str
    rules: tuple[Rule, ...]
    enabled: bool
    max_deletions: int | None
    max_fraction: float | None
    exclude_tags: tuple[str, ...]
    protect_tags: tuple[str, ...]
    keep_semver: SemverKeep | None
    keep_pulled_within_days: int | None
    keep_in_use: bool
    untag_partial: bool
    children_follow_index: bool
    archive_layers: bool | None = None

    @property
    def dry_run(self) -> bool:
        return not self.enabled

    @property
    def native(self) -> bool:
        return all(r.native for r in self.rules)

    def ecr_policy(self) -> dict[str, Any]:
        """The rules as an ECR lifecycle policy document (what drift compares against)."""
        return {"rules": [r.ecr_json() for r in self.rules]}


class PolicySet:
    """All policies of one file; resolves the effective policy of a repository.

    The first policy (in file order) whose ``registries`` and ``repositories`` globs match, and
    whose ``exclude_repositories`` do not, governs a repository; its ``overrides`` whose globs
    match are applied in order on top. A repository no policy matches is not planned.
    """

    def __init__(self, model: FileModel, source: str = "<memory>", enable: Iterable[str] = ()) -> None:
        self.model = model
        self.source = source
        self._cache: dict[tuple[str, str], ResolvedPolicy | None] = {}
        self._rules: dict[tuple[int, int | None], tuple[Rule, ...]] = {}
        self._validate()
        self.enabled_by_name = self._known(enable)

    def _known(self, names: Iterable[str]) -> frozenset[str]:
        """Policy names to enable from outside the file (config or command line), all known."""
        wanted = frozenset(names)
        unknown = sorted(wanted - set(self.names))
        if unknown:
            raise PolicyError(
                f"{self.source}: cannot enable {', '.join(map(repr, unknown))}: no such policy "
                f"(policies in this file: {', '.join(map(repr, self.names))})"
            )
        return wanted

    def with_enabled(self, names: Iterable[str]) -> PolicySet:
        """This file with the named policies enabled as well (``retention.enable_policies``,
        ``--enable-policy``): the way to execute a plain ECR lifecycle file, which has no
        ``enabled`` field of its own; its one policy is named after the file's stem."""
        return PolicySet(self.model, self.source, self.enabled_by_name | frozenset(names))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.model.policies]

    def _where(self, p: int, o: int | None = None) -> str:
        name = self.model.policies[p].name
        return f"{self.source}: policy {name!r}" + (f" overrides[{o}]" if o is not None else "")

    def _validate(self) -> None:
        names = self.names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PolicyError(f"{self.source}: policies: names must be unique; repeated: {', '.join(dupes)}")
        default_rules = self.model.defaults.rules
        if default_rules is not None:
            parse_rules(default_rules, f"{self.source}: defaults")
        for p, policy in enumerate(self.model.policies):
            if policy.rules is None and default_rules is None:
                raise PolicyError(f"{self._where(p)}: rules: required (no rules in defaults either)")
            rules = policy.rules if policy.rules is not None else default_rules
            self._rules[(p, None)] = parse_rules(rules, self._where(p))
            for o, override in enumerate(policy.overrides):
                if override.rules is not None:
                    self._rules[(p, o)] = parse_rules(override.rules, self._where(p, o))
            for level in [self.model.defaults, policy, *policy.overrides]:
                for entry in [*(level.exclude_tags or []), *(level.protect_tags or [])]:
                    if entry.startswith("re:"):
                        problem = check_regex(entry[3:])
                        if problem:
                            raise PolicyError(f"{self._where(p)}: exclude_tags/protect_tags: {problem}")

    def resolve(self, repository: str, registry: str = "") -> ResolvedPolicy | None:
        """The effective policy for a repository (of a registry), or None when none applies."""
        cache_key = (registry, repository)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._resolve(repository, registry)
        return self._cache[cache_key]

    def _resolve(self, repository: str, registry: str) -> ResolvedPolicy | None:
        for p, policy in enumerate(self.model.policies):
            if registry and not repo_match(policy.registries, registry):
                continue
            if not repo_match(policy.repositories, repository):
                continue
            if repo_match(policy.exclude_repositories, repository):
                continue
            applied = tuple(
                o for o, ov in enumerate(policy.overrides) if repo_match(ov.repositories, repository)
            )
            values = dict(BUILTIN)
            rules = self._rules[(p, None)]
            for level in [self.model.defaults, policy, *(policy.overrides[o] for o in applied)]:
                for key in level.model_dump(exclude_unset=True):
                    if key in BUILTIN:
                        values[key] = getattr(level, key)
            for o in applied:
                rules = self._rules.get((p, o), rules)
            return ResolvedPolicy(
                key=(p, applied),
                name=policy.name,
                rules=rules,
                enabled=bool(values["enabled"]) or policy.name in self.enabled_by_name,
                max_deletions=values["max_deletions"],
                max_fraction=values["max_fraction"],
                exclude_tags=tuple(values["exclude_tags"] or ()),
                protect_tags=tuple(values["protect_tags"] or ()),
                keep_semver=values["keep_semver"],
                keep_pulled_within_days=values["keep_pulled_within_days"],
                keep_in_use=bool(values["keep_in_use"]),
                untag_partial=bool(values["untag_partial"]),
                children_follow_index=bool(values["children_follow_index"]),
                archive_layers=values["archive_layers"],
            )
        return None

    def enabled(self, repository: str, registry: str = "") -> bool:
        """False for dry-run policies and for repositories no policy governs."""
        policy = self.resolve(repository, registry)
        return bool(policy and policy.enabled)

    def safety(self, repository: str, registry: str = "") -> tuple[int | None, float | None]:
        """Per-repository safety overrides (max deletions, max fraction); None = config default."""
        policy = self.resolve(repository, registry)
        return (policy.max_deletions, policy.max_fraction) if policy else (None, None)


# --------------------------------------------------------------------------- loading


def _pydantic_problem(exc: ValidationError, source: str, data: Mapping[str, Any]) -> PolicyError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    where = source
    if len(loc) >= 2 and loc[0] == "policies" and isinstance(loc[1], int):
        policies = data.get("policies") or []
        name = (
            policies[loc[1]].get("name")
            if loc[1] < len(policies) and isinstance(policies[loc[1]], dict)
            else None
        )
        where += f": policy {name!r}" if name else f": policies[{loc[1]}]"
        loc = loc[2:]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return PolicyError(f"{where}: {path or '<top level>'}: {err['msg']}")


def parse_policies(data: Any, source: str = "<memory>") -> PolicySet:
    """Validate already-loaded policy data: a plain ECR policy or the wrapper format."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: top level must be an object, got {type(data).__name__}")
    if "policies" not in data:
        if "rules" not in data:
            raise PolicyError(f"{source}: expected an ECR lifecycle policy ('rules') or a 'policies' list")
        extra = sorted(set(data) - {"rules"})
        if extra:
            raise PolicyError(
                f"{source}: {extra[0]}: unknown field in an ECR lifecycle policy (only 'rules')"
            )
        name = Path(source).stem if source != "<memory>" else "ecr-policy"
        data = {"policies": [{"name": name, "repositories": ["*"], "rules": data["rules"]}]}
    try:
        model = FileModel.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_problem(exc, source, data) from None
    return PolicySet(model, source)


def load_policies(path: str | Path) -> PolicySet:
    """Read a policy file (.json, .yaml/.yml; other suffixes: JSON, then YAML) and validate it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{file}: cannot read policy file: {exc.strerror or exc}") from None
    suffix = file.suffix.lower()
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(
                f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise PolicyError(
                f"{file}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
            ) from None
    return parse_policies(data, str(file))
