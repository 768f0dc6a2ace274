"""Policy's bus entrypoints: catalog queries for the gateway, request evaluation."""

from __future__ import annotations

from contracts.rpc import GetClass, ListClasses
from libs.service_kit import ServiceKit
from services.policy.service_layer.handlers import PolicyService


def register(kit: ServiceKit, service: PolicyService) -> None:
    kit.route("list_classes", ListClasses, service.list_classes)
    kit.route("get_class", GetClass, service.get_class)
    kit.consume("evaluate", "request.submitted", {"request.submitted": service.on_request_submitted})
