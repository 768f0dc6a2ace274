"""``/v1/environment-classes``: read by everyone, created or replaced by admins."""

from __future__ import annotations

from contracts.inputs import EnvironmentClassInput
from contracts.replies import ClassUpsert
from contracts.rpc import GET_CLASS, LIST_CLASSES, UPSERT_CLASS
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.upserts import CatalogDocument, catalog_controller

REVISION_HEADER = "X-Class-Revision"

ENVIRONMENT_CLASSES: CatalogDocument[ClassUpsert] = CatalogDocument(
    path="/v1/environment-classes",
    tag="environment classes",
    plural="environment classes",
    singular="environment class",
    list_verb=LIST_CLASSES,
    get_verb=GET_CLASS,
    upsert_verb=UPSERT_CLASS,
    model=EnvironmentClassInput,
    body=request_bodies.ENVIRONMENT_CLASS,
    upsert_permission=Action.UPSERT_CLASS,
    upsert_description=(
        "Answers with the class as stored (every field, defaults filled in). Intake's copy "
        "follows through `class.upserted` (within a second); requests already decided keep "
        "the plan they got. The seed never overwrites an edited class."
    ),
    stored=lambda outcome: outcome.environment_class,
    headers={REVISION_HEADER: "The class's revision, carried by `class.upserted`"},
    header_values=lambda outcome: {REVISION_HEADER: str(outcome.revision)},
)

EnvironmentClassesController = catalog_controller("EnvironmentClassesController", ENVIRONMENT_CLASSES)
