"""``/v1/policy-packs``: the catalog's policy packs, read by everyone, changed by admins (docs/policy.md)."""

from __future__ import annotations

from contracts.inputs import PolicyPackInput
from contracts.replies import PolicyPackUpsert
from contracts.rpc import GET_POLICY_PACK, LIST_POLICY_PACKS, UPSERT_POLICY_PACK
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.upserts import CatalogDocument, catalog_controller

POLICY_PACKS: CatalogDocument[PolicyPackUpsert] = CatalogDocument(
    path="/v1/policy-packs",
    tag="policy catalog",
    plural="policy packs",
    singular="policy pack",
    list_verb=LIST_POLICY_PACKS,
    get_verb=GET_POLICY_PACK,
    upsert_verb=UPSERT_POLICY_PACK,
    model=PolicyPackInput,
    body=request_bodies.POLICY_PACK,
    upsert_permission=Action.MANAGE_POLICY,
    upsert_description=(
        "Takes effect for the next request of every class using the pack; refused when it "
        "would clash with another pack of such a class."
    ),
    stored=lambda outcome: outcome.pack,
)

PolicyPacksController = catalog_controller("PolicyPacksController", POLICY_PACKS)
