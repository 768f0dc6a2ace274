"""``/v1/quota-profiles``: the catalog's quota profiles, read by everyone, changed by admins."""

from __future__ import annotations

from contracts.inputs import QuotaProfileInput
from contracts.replies import QuotaProfileUpsert
from contracts.rpc import GET_QUOTA_PROFILE, LIST_QUOTA_PROFILES, UPSERT_QUOTA_PROFILE
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.upserts import CatalogDocument, catalog_controller

QUOTA_PROFILES: CatalogDocument[QuotaProfileUpsert] = CatalogDocument(
    path="/v1/quota-profiles",
    tag="policy catalog",
    plural="quota profiles",
    singular="quota profile",
    list_verb=LIST_QUOTA_PROFILES,
    get_verb=GET_QUOTA_PROFILE,
    upsert_verb=UPSERT_QUOTA_PROFILE,
    model=QuotaProfileInput,
    body=request_bodies.QUOTA_PROFILE,
    upsert_permission=Action.MANAGE_POLICY,
    upsert_description="Takes effect for the next request of every class using the profile.",
    stored=lambda outcome: outcome.profile,
)

QuotaProfilesController = catalog_controller("QuotaProfilesController", QUOTA_PROFILES)
