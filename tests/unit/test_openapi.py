"""shared/openapi.py: an OpenAPI 3 document generated from a service's shared.web endpoints and
marshmallow schemas, valid by openapi-spec-validator, with the chassis's conventions (bearer
security, Idempotency-Key, the error body) and the project's fields (Money, dates, Personal)."""

from __future__ import annotations

import json

import pytest
from marshmallow import fields
from openapi_spec_validator import validate

from shared.openapi import document, openapi_path, openapi_spec
from shared.schemas import LocalDate, Money, Personal, Schema, UtcDateTime
from shared.web import command, http, query


class OpenCall(Schema):
    title = fields.String(required=True)
    budget = Money(required=True)
    correction = Money(allow_negative=True)
    opens_on = LocalDate(required=True)
    contact = Personal(fields.Email())


class CallOut(Schema):
    call_id = fields.String()
    opened_at = UtcDateTime()


class Window(Schema):
    since = LocalDate(metadata={"description": "first day"})


class Toy:
    name = "toy"

    @command("POST", "/calls", schema=OpenCall)
    @document(status=201, response=CallOut)
    def open_call(self, cmd):
        """Open a call.

        The call is published at once.
        """

    @document(response=CallOut, query=Window, tags=("calls",))
    @query("/calls/<call_id>/rounds/<int:round_no>")
    def get_round(self, request, call_id, round_no):
        """A round of a call."""

    @command("POST", "/calls/<call_id>/close", schema=Window)
    def close_call(self, cmd, call_id):
        pass

    @http("GET", "/health", public=True)
    def health(self, request):
        pass

    @query("/calls.csv")
    @document(media_type="text/csv")
    def export(self, request):
        """Calls as CSV."""

    def not_an_endpoint(self):
        pass


@pytest.fixture(scope="module")
def spec():
    return openapi_spec(Toy, title="toy", version="9", description="a toy")


def test_the_document_is_valid_openapi_3_and_plain_json(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert spec["info"] == {"title": "toy", "version": "9", "description": "a toy"}
    assert json.loads(json.dumps(spec)) == spec


def test_every_endpoint_and_only_endpoints_are_documented(spec):
    assert {(path, method) for path, ops in spec["paths"].items() for method in ops} == {
        ("/calls", "post"),
        ("/calls/{call_id}/rounds/{round_no}", "get"),
        ("/calls/{call_id}/close", "post"),
        ("/health", "get"),
        ("/calls.csv", "get"),
    }
    assert openapi_path("/a/<int:n>/b/<name>")[0] == "/a/{n}/b/{name}"


def test_a_command_has_its_body_an_idempotency_key_a_token_and_its_refusals(spec):
    op = spec["paths"]["/calls"]["post"]
    assert op["operationId"] == "open_call"
    assert (op["summary"], op["description"]) == ("Open a call.", "The call is published at once.")
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenCall"
    }
    assert op["requestBody"]["required"] is True
    # A body whose every member is optional may be left out (it loads as {}).
    assert spec["paths"]["/calls/{call_id}/close"]["post"]["requestBody"]["required"] is False
    headers = {p["name"]: p["required"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key": True, "X-Correlation-Id": False}
    assert op["security"] == [{"bearerAuth": []}]
    assert set(op["responses"]) == {"201", "400", "401", "403", "409", "413", "415", "422", "500"}
    assert op["responses"]["409"] == {"$ref": "#/components/responses/Conflict"}
    assert op["responses"]["413"] == {"$ref": "#/components/responses/PayloadTooLarge"}
    assert op["responses"]["415"] == {"$ref": "#/components/responses/UnsupportedMediaType"}
    conflict = spec["components"]["responses"]["Conflict"]
    assert conflict["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "fields" in spec["components"]["schemas"]["ErrorBody"]["properties"]


def test_a_read_has_path_and_query_parameters_and_no_idempotency_key(spec):
    op = spec["paths"]["/calls/{call_id}/rounds/{round_no}"]["get"]
    params = {(p["in"], p["name"]): p for p in op["parameters"]}
    assert params[("path", "call_id")]["schema"] == {"type": "string"}
    assert params[("path", "round_no")]["schema"] == {"type": "integer"}
    assert params[("query", "since")]["schema"] == {"type": "string", "format": "date"}
    assert params[("query", "since")]["description"] == "first day"
    assert ("header", "Idempotency-Key") not in params
    assert op["tags"] == ["calls"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "422", "500"}


def test_a_public_endpoint_needs_no_token_and_an_export_is_not_json(spec):
    assert spec["paths"]["/health"]["get"]["security"] == []
    # A bad X-Correlation-Id (400) or a NUL in a query parameter (422) can reach any endpoint.
    assert set(spec["paths"]["/health"]["get"]["responses"]) == {"200", "400", "422", "500"}
    csv = spec["paths"]["/calls.csv"]["get"]["responses"]["200"]["content"]
    assert csv == {"text/csv": {"schema": {"type": "string"}}}
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }


def test_the_projects_fields_are_typed_as_on_the_wire(spec):
    props = spec["components"]["schemas"]["OpenCall"]["properties"]
    assert props["budget"]["type"] == "string"
    assert props["budget"]["pattern"] == r"^[0-9]{1,15}(\.[0-9]{1,2})?$"
    assert props["correction"]["pattern"].startswith("^-?")
    assert props["opens_on"] == {"type": "string", "format": "date"}
    assert props["contact"] == {"type": "string", "format": "email"}
    out = spec["components"]["schemas"]["CallOut"]["properties"]
    assert out["opened_at"] == {"type": "string", "format": "date-time"}
    assert spec["components"]["schemas"]["OpenCall"]["additionalProperties"] is False
