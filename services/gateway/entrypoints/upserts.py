"""The catalog's documents (classes, quota profiles, policy packs): one controller shape for all.

Everyone lists and reads them (a read is tagged with a hash of the document,
:mod:`.conditional`); admins PUT them whole (201 when new, 200 when replaced or unchanged,
told apart by ``X-Platform-Change``), the last writer winning unless the PUT sends
``If-Match`` with the ``ETag`` it read (then policy writes only if that is still the current
one, else 409). A
body its :mod:`contracts.inputs` model refuses is still shown to policy, which adds what
only it can judge (the name in the URL, the profile and packs a class refers to), so one
422 names every failing field; policy validates a body the model accepts again, with the
catalog as it is in its transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import pydantic
from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import RequestBody
from litestar.params import FromPath

from contracts.rpc import RpcVerb
from libs.errors import validation_failed
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.conditional import IfNoneMatch, content_tag, tagged
from services.gateway.entrypoints.openapi import BODY_ERRORS, documented, error_responses, tagged_answers
from services.gateway.entrypoints.request_inputs import read_json_object
from services.gateway.settings import GatewaySettings


class _Upserted(Protocol):
    @property
    def created(self) -> bool: ...

    @property
    def unchanged(self) -> bool: ...


# Every PUT of a catalog document says what it did, so a client (platformctl's "unchanged")
# need not compare documents: 201 alone says created, but 200 is both a replace and a PUT of
# the content already stored, which changes nothing (no revision, no event).
CHANGE_HEADER = "X-Platform-Change"
CHANGE_HEADER_DESCRIPTION = (
    "What the PUT did: `created` (201), `replaced` (200, the content changed) or `unchanged` "
    "(200, the same content was stored already: nothing was written)"
)


def change_of(outcome: _Upserted) -> str:
    """The :data:`CHANGE_HEADER` value of an upsert's reply."""
    if outcome.created:
        return "created"
    return "unchanged" if outcome.unchanged else "replaced"


ReplyT = TypeVar("ReplyT", bound=_Upserted)


@dataclass(frozen=True)
class CatalogDocument(Generic[ReplyT]):
    """One kind of catalog document, as its controller serves it.

    ``stored`` picks the document out of the upsert's reply; ``headers`` documents the
    response headers of a PUT (``{name: description}``) and ``header_values`` fills them.
    Operation ids are ``V1<Path><List|NameGet|NameUpsert><Noun>``, as they were when each
    kind had a controller of its own.
    """

    path: str
    tag: str
    plural: str
    singular: str
    list_verb: RpcVerb[Any, Any]
    get_verb: RpcVerb[Any, Any]
    upsert_verb: RpcVerb[Any, ReplyT]
    model: type[pydantic.BaseModel]
    body: RequestBody
    upsert_permission: Action
    upsert_description: str
    stored: Callable[[ReplyT], Any]
    headers: dict[str, str] = field(default_factory=dict)
    header_values: Callable[[ReplyT], dict[str, str]] = lambda _: {}

    def operation_id(self, action: str, noun: str) -> str:
        resource = "".join(part.title() for part in self.path.rsplit("/", 1)[-1].split("-"))
        return f"V1{resource}{action}{noun.rsplit(maxsplit=1)[-1].title()}"


def catalog_controller(name: str, document: CatalogDocument[Any]) -> type[Controller]:
    """A controller serving ``document``'s list, get and PUT at ``document.path``."""
    item_type, list_type = document.get_verb.reply_type, document.list_verb.reply_type

    @get(
        "/",
        summary=f"List {document.plural}",
        description=f"Every {document.singular}, sorted by name.",
        guards=[requires(Action.READ)],
        operation_id=document.operation_id("List", document.plural),
        responses={200: _spec(list_type, f"The {document.plural}"), **error_responses()},
    )
    async def list_documents(self: Controller, services: NamedDependency[Services]) -> Response[Any]:
        # Sorted here whoever answers: the order is the gateway's promise.
        listed = await services.ask(document.list_verb, document.list_verb.request_type())
        return Response(msgspec.structs.replace(listed, items=sorted(listed.items, key=attrgetter("name"))))

    @get(
        "/{name:str}",
        summary=f"Get {_article(document.singular)} {document.singular}",
        guards=[requires(Action.READ)],
        operation_id=document.operation_id("NameGet", document.singular),
        responses=tagged_answers(item_type, f"The {document.singular}", 404),
    )
    async def get_document(
        self: Controller,
        services: NamedDependency[Services],
        name: FromPath[str],
        if_none_match: IfNoneMatch = None,
    ) -> Response[Any]:
        stored = await services.ask(document.get_verb, document.get_verb.request_type(name=name))
        return tagged(stored, content_tag(stored), if_none_match)

    @put(
        "/{name:str}",
        summary=f"Create or replace {_article(document.singular)} {document.singular} (full replace)",
        description=document.upsert_description,
        guards=[requires(document.upsert_permission)],
        operation_id=document.operation_id("NameUpsert", document.singular),
        operation_class=documented(
            body=document.body,
            headers={
                status: {**document.headers, CHANGE_HEADER: CHANGE_HEADER_DESCRIPTION}
                for status in ("200", "201")
            },
        ),
        responses={
            200: _spec(item_type, "Replaced"),
            201: _spec(item_type, "Created"),
            **error_responses(409, *BODY_ERRORS),
        },
    )
    async def upsert_document(
        self: Controller,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        name: FromPath[str],
        catalog_if_match: NamedDependency[str | None],
    ) -> Response[Any]:
        raw = await read_json_object(request, settings)
        actor = principal.to_actor()
        try:
            body = document.model.model_validate(raw)
        except pydantic.ValidationError as exc:
            await services.refuse(
                document.upsert_verb, {"name": name, "body": raw, "actor": actor}, validation_failed(exc)
            )
        outcome = await services.ask(
            document.upsert_verb,
            document.upsert_verb.request_type(name=name, body=body, actor=actor, if_match=catalog_if_match),
        )
        stored = document.stored(outcome)
        return Response(
            stored,
            status_code=201 if outcome.created else 200,
            # The stored document's tag, as its GET would give it: the If-Match of the next PUT.
            headers={
                **document.header_values(outcome),
                CHANGE_HEADER: change_of(outcome),
                "ETag": content_tag(stored),
            },
        )

    return type(
        name,
        (Controller,),
        {
            "path": document.path,
            "tags": [document.tag],
            "security": SECURITY,
            "list_documents": list_documents,
            "get_document": get_document,
            "upsert_document": upsert_document,
        },
    )


def _spec(model: type[Any], description: str) -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description, generate_examples=False)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"
