"""Assign: one option per mappable layer.

For now the mapping comes from the user (`--mapping FILE|PRESET`, default
all-analog); the solver that chooses it under an accuracy budget replaces
this in a later step, keeping the same report.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from hetmap.mapping import Mapping, resolve_mapping, validate
from hetmap.pipeline import PassContext


@dataclass
class AssignReport:
    source: str
    mapping: Mapping


class Assign:
    name = "assign"
    rewrites_graph = False

    def __init__(self, mapping_spec: str = "all-analog"):
        self.mapping_spec = mapping_spec

    def run(self, model: ir.Model, context: PassContext) -> tuple[ir.Model, AssignReport]:
        names = [layer.name for layer in context.reports["partition"].layers]
        mapping = validate(resolve_mapping(self.mapping_spec, names), names, context.target, self.mapping_spec)
        return model, AssignReport(source=self.mapping_spec, mapping=mapping)
