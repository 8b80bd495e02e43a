"""The tracking plan (`tracking_plan.yml`): the event types a shop sends, their properties, and
what happens to events it does not describe.

The file is the one definition of the event contract. Reading it checks every part and names the
line of the first problem, so a bad edit is refused whole: nothing of it is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segops.errors import SegOpsError
from segops.settings import load_settings

TYPES = ("string", "number", "integer", "boolean", "timestamp", "object", "array")
POLICIES = ("allow", "block")
PLAN_KEYS = {"unplanned_events", "violations", "events"}
EVENT_KEYS = {"description", "properties", "violations"}
PROPERTY_KEYS = {"type", "required", "values", "description"}


class PlanError(SegOpsError):
    """The tracking plan cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Property:
    type: str
    required: bool = False
    values: tuple[Any, ...] | None = None  # the allowed values, if the plan lists them
    description: str = ""


@dataclass(frozen=True)
class EventType:
    description: str
    properties: dict[str, Property] = field(default_factory=dict)
    violations: str | None = None  # overrides the plan's policy for this type

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name, p in self.properties.items() if p.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(name for name, p in self.properties.items() if not p.required)


@dataclass(frozen=True)
class TrackingPlan:
    events: dict[str, EventType]
    unplanned_events: str = "allow"
    violations: str = "block"

    def blocks_violations_of(self, event_type: str) -> bool:
        return (self.events[event_type].violations or self.violations) == "block"


def load_plan(path: Path | None = None) -> TrackingPlan:
    """Read and check the plan (by default the settings' one); PlanError names the line of the
    first problem."""
    path = path or load_settings().tracking_plan
    try:
        text = path.read_text()
    except OSError as error:
        raise PlanError(f"cannot read the tracking plan {path}: {error.strerror}") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise PlanError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})"
                        ) from None
    return _Reader(path).plan(root)


class _Reader:
    """Builds the plan from YAML nodes, which know their lines."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, node: yaml.Node, message: str) -> PlanError:
        return PlanError(f"{self.path}, line {node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node | None, what: str, keys: set[str] | None = None
                ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node or yaml.ScalarNode("", ""), f"{what} must be a mapping")
        found = {}
        for key, value in node.value:
            name = key.value
            if keys is not None and name not in keys:
                raise self.fail(key, f"unknown key {name!r} in {what} "
                                     f"(expected {', '.join(sorted(keys))})")
            if name in found:
                raise self.fail(key, f"{name!r} appears twice in {what}")
            found[name] = (key, value)
        return found

    def scalar(self, node: yaml.Node, what: str, choices: tuple[str, ...] | None = None) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        value = yaml.safe_load(yaml.serialize(node))
        if choices is not None and value not in choices:
            raise self.fail(node, f"{what} is {value!r}; expected one of {', '.join(choices)}")
        return value

    def plan(self, root: yaml.Node | None) -> TrackingPlan:
        if root is None:
            raise PlanError(f"{self.path}: the tracking plan is empty")
        top = self.mapping(root, "the tracking plan", PLAN_KEYS)
        if "events" not in top:
            raise self.fail(root, "the tracking plan has no `events`")
        events = {name: self.event_type(name, value)
                  for name, (_, value) in self.mapping(top["events"][1], "events").items()}
        policies = {key: self.scalar(top[key][1], key, POLICIES)
                    for key in ("unplanned_events", "violations") if key in top}
        return TrackingPlan(events=events, **policies)

    def event_type(self, name: str, node: yaml.Node) -> EventType:
        parts = self.mapping(node, f"event type {name!r}", EVENT_KEYS)
        properties = {
            prop: self.property(name, prop, value)
            for prop, (_, value) in (self.mapping(parts["properties"][1],
                                                  f"{name}'s properties").items()
                                     if "properties" in parts else [])
        }
        return EventType(
            description=str(self.scalar(parts["description"][1], "description"))
            if "description" in parts else "",
            properties=properties,
            violations=self.scalar(parts["violations"][1], f"{name}'s violations", POLICIES)
            if "violations" in parts else None,
        )

    def property(self, event: str, name: str, node: yaml.Node) -> Property:
        where = f"{event}.{name}"
        parts = self.mapping(node, f"property {where}", PROPERTY_KEYS)
        if "type" not in parts:
            raise self.fail(node, f"property {where} has no type")
        kind = self.scalar(parts["type"][1], f"{where}'s type", TYPES)
        required = self.scalar(parts["required"][1], f"{where}'s required") \
            if "required" in parts else False
        if not isinstance(required, bool):
            raise self.fail(parts["required"][1], f"{where}'s required is true or false")
        values = None
        if "values" in parts:
            values_node = parts["values"][1]
            if not isinstance(values_node, yaml.SequenceNode) or not values_node.value:
                raise self.fail(values_node, f"{where}'s values is a list of allowed values")
            values = tuple(self.scalar(v, f"a value of {where}") for v in values_node.value)
        description = str(self.scalar(parts["description"][1], f"{where}'s description")) \
            if "description" in parts else ""
        return Property(type=kind, required=required, values=values, description=description)
