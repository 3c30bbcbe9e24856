"""The OpenAPI document of /api/v1, generated from the marshmallow schemas in schemas.py."""

from __future__ import annotations

from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import schemas

_ERRORS = {
    "400": "invalid input: one message per field",
    "401": "missing or bad token",
    "403": "visible, but not yours to do",
    "404": "missing or outside your units",
    "409": "claimed, completed or changed by someone else",
    "429": "too many failed sign-ins: wait for Retry-After seconds",
    "503": "too many sign-ins at once: try again shortly",
}


def _op(
    summary: str,
    ok: tuple[str, str | None],
    body: str | None = None,
    params: list | None = None,
    errors: tuple[str, ...] = ("401",),
) -> dict:
    status, schema = ok
    responses = {status: {"description": "OK"}}
    if schema:
        responses[status]["content"] = {"application/json": {"schema": schema}}
    for code in errors:
        responses[code] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": "ErrorOut"}},
        }
    op = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    if "401" in errors:
        op["security"] = [{"bearer": []}]
    return op


def _q(name: str, type_: str = "string") -> dict:
    return {"in": "query", "name": name, "schema": {"type": type_}, "required": False}


def _p(name: str, type_: str = "string") -> dict:
    return {"in": "path", "name": name, "schema": {"type": type_}, "required": True}


@cache
def build_openapi() -> dict:
    spec = APISpec(
        title="Gridloop", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()]
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name in (
        "TokenIn",
        "TokenOut",
        "CaseIn",
        "CompleteIn",
        "TransferIn",
        "MeOut",
        "CaseOut",
        "CasePage",
        "WorkItemOut",
        "InboxPage",
        "EventsOut",
        "ErrorOut",
    ):
        spec.components.schema(name, schema=getattr(schemas, name))
    item = [_p("item_id", "integer")]
    all_errors = ("400", "401", "403", "404", "409")
    paths = {
        "/tokens": {
            "post": _op(
                "Log in for a token",
                ("201", "TokenOut"),
                "TokenIn",
                errors=("400", "401", "429", "503"),
            ),
            "delete": _op("Revoke the calling token", ("204", None)),
        },
        "/me": {"get": _op("Who I am and my positions", ("200", "MeOut"))},
        "/cases": {
            "post": _op("Open a case", ("201", "CaseOut"), "CaseIn", errors=("400", "401")),
            "get": _op(
                "Cases in my units, newest first, narrowed by any of the filters",
                ("200", "CasePage"),
                params=_case_filters(),
                errors=("400", "401", "404"),
            ),
        },
        "/cases/{number}": {
            "get": _op("One case", ("200", "CaseOut"), params=[_p("number")], errors=("401", "404"))
        },
        "/cases/{number}/events": {
            "get": _op(
                "The case's hash-chained events",
                ("200", "EventsOut"),
                params=[_p("number")],
                errors=("401", "404"),
            )
        },
        "/inbox": {
            "get": _op(
                "My work items, most urgent first",
                ("200", "InboxPage"),
                params=[_q("overdue", "boolean"), _q("category"), _q("cursor")],
                errors=("400", "401"),
            )
        },
        "/stats": {
            "get": _op(
                "A unit's figures (DESIGN §11) over a period of Asia/Shanghai dates, with "
                "`children` (the same per child unit) and `by_category`",
                ("200", None),
                params=[
                    _q("unit"),
                    {**_q("from"), "schema": {"type": "string", "format": "date"}},
                    {**_q("to"), "schema": {"type": "string", "format": "date"}},
                    _q("category"),
                ],
                errors=("400", "401", "404"),
            )
        },
        "/work-items/{item_id}/claim": {
            "post": _op("Claim", ("200", "WorkItemOut"), params=item, errors=all_errors)
        },
        "/work-items/{item_id}/release": {
            "post": _op("Release", ("200", "WorkItemOut"), params=item, errors=all_errors)
        },
        "/work-items/{item_id}/complete": {
            "post": _op(
                "Complete with the form's data",
                ("200", "CaseOut"),
                "CompleteIn",
                params=item,
                errors=all_errors,
            )
        },
        "/work-items/{item_id}/transfer": {
            "post": _op(
                "Send the case to the grid it belongs to (转办)",
                ("200", "CaseOut"),
                "TransferIn",
                params=item,
                errors=all_errors,
            )
        },
    }
    for name in ("DelegationIn", "DelegationOut", "DelegationPage"):
        spec.components.schema(name, schema=getattr(schemas, name))
    paths.update(_delegation_paths())
    paths.update(_audit_paths())
    paths.update(_admin_log_paths())
    spec.components.schema("PhotoOut", schema=schemas.PhotoOut)
    paths.update(_photo_paths())
    paths.update(_diagram_paths())
    paths.update(_migration_paths())
    paths.update(_household_paths())
    paths.update(_campaign_paths())
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _campaign_refs(document)
    document["servers"] = [{"url": "/api/v1"}]
    return document


def _case_filters() -> list[dict]:
    """The query of GET /cases, the case browser (engine/case_search.py): every filter is
    optional and they combine with AND. A bad value answers 400 naming the parameter; a unit
    that is unknown or outside the caller's units answers 404."""

    def described(param: dict, text: str, **schema) -> dict:
        param["description"] = text
        param["schema"].update(schema)
        return param

    return [
        described(_q("number"), "a prefix of the case number, any case (XDK-2026-0000)"),
        described(
            _q("unit"),
            "a unit code the caller covers: cases in that village, district or grid, or the "
            "cases a department was named on",
        ),
        described(_q("person"), "a username, or a person's full name"),
        described(
            _q("person_as"),
            "how the person is linked: owner (首接), handler (completed or holds a handle "
            "item), actor (named by any event) or any of these",
            enum=["any", "owner", "handler", "actor"],
            default="any",
        ),
        described(_q("category"), "a category of any diagram version"),
        described(
            _q("status"),
            "one status, or open (neither archived nor rejected)",
            enum=[*schemas.STATUSES, "open"],
        ),
        described(
            _q("from"), "opened on or after this day (Asia/Shanghai, inclusive)", format="date"
        ),
        described(
            _q("to"),
            "opened on or before this day (Asia/Shanghai, inclusive); not before from",
            format="date",
        ),
        described(
            _q("overdue", "boolean"),
            "true: an open item of the case is past its deadline (as `overdue` in a case); "
            "false: none is",
        ),
        described(_q("escalated", "integer"), "escalated at least this many times", minimum=1),
        described(_q("cursor"), "next_cursor of the page before, with the same filters"),
    ]


def _audit_paths() -> dict:
    """Auditors' calls (webapp/audit.py, webapp/dossier.py; DESIGN §6): replay, dossier, digests,
    verification runs. Replays, new digests and verifications are for auditors and administrators."""
    number = [_p("number")]
    return {
        "/cases/{number}/replay": {
            "post": _op(
                "Rebuild the case from its events and compare: {ok, events_replayed, divergence}",
                ("200", None),
                params=number,
                errors=("401", "403", "404"),
            )
        },
        "/cases/{number}/dossier": {
            "get": _op(
                "The case's dossier (DESIGN §6): check it offline with tools/verify_dossier.py",
                ("200", None),
                params=number,
                errors=("401", "404"),
            )
        },
        "/digests": {
            "get": _op(
                "The daily digests, newest first: {items: [{n, made_at, prev, hash, cases}], "
                "next_cursor}",
                ("200", None),
                params=[_q("cursor")],
            ),
            "post": _op(
                "Make a digest now of the chains that grew since the last one",
                ("201", None),
                errors=("401", "403", "409"),
            ),
        },
        "/digests/{n}": {
            "get": _op(
                "One digest with its heads [[case, seq, hash], ...]",
                ("200", None),
                params=[_p("n", "integer")],
                errors=("401", "404"),
            )
        },
        "/verifications": {
            "post": _op(
                "Verify every chain against every digest, as a background job: 202 {job}",
                ("202", None),
                errors=("401", "403"),
            )
        },
        "/jobs/{job_id}": {
            "get": _op(
                "A background job: {state, done, total, results}",
                ("200", None),
                params=[_p("job_id", "integer")],
                errors=("401", "403", "404"),
            )
        },
    }


def _delegation_paths() -> dict:
    """代理 (webapp/delegation.py): a person's items worked by a colleague for a span of days."""
    return {
        "/delegations": {
            "get": _op(
                "My active and upcoming delegations, given and received",
                ("200", "DelegationPage"),
            ),
            "post": _op(
                "Delegate my items to a colleague from one day to another (Asia/Shanghai, "
                "inclusive)",
                ("201", "DelegationOut"),
                "DelegationIn",
                errors=("400", "401", "403"),
            ),
        },
        "/delegations/{delegation_id}": {
            "delete": _op(
                "Revoke a delegation I gave (the row is kept, with revoked_at)",
                ("204", None),
                params=[_p("delegation_id", "integer")],
                errors=("401", "403", "404", "409"),
            )
        },
    }


def _photo_paths() -> dict:
    """照片 (webapp/photos.py): upload first, then name the photo by its sha256 in `photos` of
    POST /cases or of a task's data."""
    upload = _op(
        "Upload one photo (JPEG, PNG or WebP, at most 10 MB); its location is removed unless "
        "keep_location is true",
        ("201", "PhotoOut"),
        errors=("400", "401", "403"),
    )
    upload["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "keep_location": {"type": "boolean", "default": False},
                    },
                }
            }
        },
    }
    served = _op(
        "A photo of a case I may see, with its content type",
        ("200", None),
        params=[_p("number"), _p("sha256")],
        errors=("401", "404"),
    )
    served["responses"]["200"]["content"] = {
        kind: {"schema": {"type": "string", "format": "binary"}}
        for kind in ("image/jpeg", "image/png", "image/webp")
    }
    return {"/photos": {"post": upload}, "/cases/{number}/photos/{sha256}": {"get": served}}


def _admin_log_paths() -> dict:
    """The administration log (webapp/admin_log_pages.py; engine/admin_log.py), for auditors and
    administrators."""
    before = _q("before", "integer")
    before["description"] = "entries older than this seq (the last item's seq of the page before)"
    kind = _q("type")
    kind["description"] = "one kind of entry, e.g. diagram_deployed, calendar_changed"
    return {
        "/admin-log": {
            "get": _op(
                "The administration log, newest first, 50 at a time: {items: [{log, seq, at, "
                "type, actor, data, prev, hash}], head: {seq, hash}}",
                ("200", None),
                params=[before, kind],
                errors=("400", "401", "403"),
            )
        }
    }


def _diagram_paths() -> dict:
    """Diagram versions (webapp/diagrams.py; DESIGN §8), for administrators only: 403 for
    everyone else, auditors included."""
    sha = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    version = {
        "type": "object",
        "properties": {
            "hash": sha,
            "processes": {"type": "array", "items": {"type": "string"}},
            "deployed_at": {"type": "string", "format": "date-time"},
            "deployed_by": {"type": "string"},
            "comment": {"type": "string"},
            "live": {"type": "boolean"},
            "activated_at": {"type": "string", "format": "date-time", "nullable": True},
            "cases_open": {"type": "integer"},
            "cases_total": {"type": "integer"},
        },
    }
    with_files = {
        "allOf": [
            version,
            {
                "type": "object",
                "properties": {
                    "files": {"type": "object", "additionalProperties": {"type": "string"}}
                },
            },
        ]
    }
    listing = {"type": "object", "properties": {"items": {"type": "array", "items": version}}}
    comment = {"type": "string", "maxLength": 2000}
    deploy_in = {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "object",
                "description": "the whole bundle: path from the repository root (under "
                "workflows/bpmn/ or rules/, ending in .bpmn, .dmn or .json) -> text",
                "additionalProperties": {"type": "string"},
            },
            "comment": comment,
            "activate": {"type": "boolean", "default": True},
        },
    }
    ids = {
        "type": "object",
        "properties": {
            k: {"type": "array", "items": {"type": "string"}}
            for k in ("added", "removed", "changed")
        },
    }
    diff = {
        "type": "object",
        "properties": {"elements": ids, "rules": ids, "forms": ids},
        "description": "element ids, DMN rule ids and form fields as forms/<file>#<field>",
    }
    deploy = _op(
        "Validate and store a bundle as a version (201; 200 when that hash exists), live "
        "unless activate is false. A refused bundle answers 400 {error: {code: invalid_bundle, "
        "message, problems: [{file, element, message}]}} and the live version is unchanged",
        ("201", version),
        errors=("400", "401", "403", "409"),
    )
    deploy["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": deploy_in}},
    }
    deploy["responses"]["200"] = {
        "description": "that bundle was already a version",
        "content": {"application/json": {"schema": version}},
    }
    activate = _op(
        "Make a version live: new cases start on it (rollback is activating an older one)",
        ("200", version),
        params=[_p("sha256")],
        errors=("400", "401", "403", "404", "409"),
    )
    activate["requestBody"] = {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {"comment": comment}}}
        },
    }
    return {
        "/diagrams": {
            "get": _op(
                "Every version, newest first: {items: [version]}",
                ("200", listing),
                errors=("401", "403"),
            ),
            "post": deploy,
        },
        "/diagrams/{sha256}": {
            "get": _op(
                "One version with its files",
                ("200", with_files),
                params=[_p("sha256")],
                errors=("401", "403", "404"),
            )
        },
        "/diagrams/{sha256}/activate": {"post": activate},
        "/diagrams/{a}/diff/{b}": {
            "get": _op(
                "What changed from version a to version b",
                ("200", diff),
                params=[_p("a"), _p("b")],
                errors=("401", "403", "404"),
            )
        },
    }


def _migration_paths() -> dict:
    """Migration of running cases to another diagram version (webapp/migrations.py; DESIGN §8),
    for administrators only. A real run is a job: follow it with GET /jobs/{job_id}."""
    sha = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    body = {
        "type": "object",
        "required": ["to", "dry_run"],
        "properties": {
            "to": {**sha, "description": "the version to move the cases to"},
            "from": {
                **sha,
                "nullable": True,
                "description": "only cases on this version; without `cases`, every open case on "
                "it (default: on any other version than `to`)",
            },
            "cases": {
                "type": "array",
                "items": {"type": "string"},
                "nullable": True,
                "description": "case numbers; default: every open case the other fields select",
            },
            "dry_run": {"type": "boolean", "description": "only say which cases can move"},
        },
    }
    result = {
        "type": "object",
        "properties": {
            "case": {"type": "string"},
            "ok": {"type": "boolean"},
            "reason": {"type": "string", "nullable": True, "description": "why it cannot move"},
            "code": {
                "type": "string",
                "nullable": True,
                "description": "the reason in a word: task_removed, task_changed, "
                "history_removed, closed, same_version, not_from, other_process, not_found, "
                "failed, conflict",
            },
            "element": {"type": "string", "nullable": True, "description": "the element at fault"},
        },
    }
    dry = {
        "type": "object",
        "properties": {"results": {"type": "array", "items": result}},
    }
    op = _op(
        "Dry run (200 {results: [{case, ok, reason}]}) or run as a job (202 {job}) the move of "
        "running cases to another diagram version; each moved case gets a `migrated` event "
        "{from, to}. A case at a task the target removes or changes cannot move",
        ("200", dry),
        errors=("400", "401", "403"),
    )
    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    op["responses"]["202"] = {
        "description": "the run started: follow it with GET /jobs/{job_id}",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"job": {"type": "integer"}}}
            }
        },
    }
    return {"/migrations": {"post": op}}


def _household_paths() -> dict:
    """住户名册 (webapp/households.py; engine/households.py; DESIGN §12): a grid's households, for
    everyone whose positions cover the grid (auditors: every grid)."""
    household = {
        "type": "object",
        "properties": {
            "number": {"type": "integer"},
            "head": {"type": "string", "nullable": True},
            "phone": {
                "type": "string",
                "nullable": True,
                "description": "masked: its first 3 and last 4 digits (138****5678)",
            },
            "in_group": {
                "type": "boolean",
                "description": "a representative has joined the grid's group chat (一户一代表)",
            },
        },
    }
    op = _op(
        "A grid's households in number order, phones masked; 404 for a grid outside my units",
        ("200", None),
        params=[_p("code")],
        errors=("401", "404"),
    )
    op["responses"]["200"]["content"] = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "grid": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "name": {"type": "string"}},
                    },
                    "items": {"type": "array", "items": household},
                },
            }
        }
    }
    return {"/grids/{code}/households": {"get": op}}


# ------------------------------------------------------------------ campaigns (helper 1)


def _campaign_paths() -> dict:
    """工作任务 (webapp/campaign_api.py; engine/campaigns.py; DESIGN §12): a town leader's
    campaign over villages, districts and grids, its visits, chain and coverage. Each answer holds
    the grids of the campaign in the caller's units; a campaign with none of them is 404."""
    obj, string, integer, boolean = (
        "object",
        {"type": "string"},
        {"type": "integer"},
        {"type": "boolean"},
    )
    nullable = {"type": "string", "nullable": True}
    grid = {
        "type": obj,
        "properties": {
            "code": string,
            "name": string,
            "status": string,
            "supervised": boolean,
            "returned": {**boolean, "description": "its return was completed and confirmed"},
            "late": {**boolean, "description": "not returned by the campaign's due time"},
            "households_total": integer,
            "households_covered": integer,
        },
    }
    campaign = {
        "type": obj,
        "properties": {
            "id": integer,
            "number": {**string, "description": "town, year and sequence: XDK-2026-T0007"},
            "title": string,
            "instructions": string,
            "kind": {"type": "string", "enum": ["publicity", "patrol", "survey", "group_drive"]},
            "targets": {"type": "array", "items": string},
            "checklist": {"type": obj, "description": "a JSON Schema for one household's visit"},
            "launched_by": string,
            "launched_at": string,
            "due_at": string,
            "status": {"type": "string", "enum": ["open", "closed"]},
            "closed_at": nullable,
            "households_total": integer,
            "households_covered": integer,
            "grids": {"type": "array", "items": grid},
        },
    }
    launch = {
        "type": obj,
        "required": ["title", "kind", "targets", "due_at", "checklist"],
        "properties": {
            "title": string,
            "instructions": string,
            "kind": campaign["properties"]["kind"],
            "targets": {
                "type": "array",
                "items": string,
                "description": "codes of villages, districts and grids of the town",
            },
            "due_at": {**string, "description": "ISO 8601 with its offset, in the future"},
            "checklist": {
                "type": obj,
                "description": "a JSON Schema object whose properties are boolean or string "
                "items; a boolean marked `x-opens-case: true` opens a case when a visit sets it",
            },
        },
    }
    household = {"type": obj, "properties": {"grid": string, "number": integer}}
    visit_in = {
        "type": obj,
        "required": ["household", "data", "client_id"],
        "properties": {
            "household": household,
            "data": {"type": obj, "description": "the answer to the campaign's checklist"},
            "client_id": {
                **string,
                "maxLength": 64,
                "description": "made by the client: a resend with it returns the same visit",
            },
        },
    }
    visit = {
        "type": obj,
        "properties": {
            "id": integer,
            "client_id": string,
            "household": household,
            "data": {"type": obj},
            "recorded_by": string,
            "at": string,
            "case": {**nullable, "description": "the number of the case a hazard opened"},
        },
    }
    figures = {
        "unit": {
            "type": obj,
            "properties": {"code": string, "name": string, "level": string},
        },
        "households_total": integer,
        "households_covered": {**integer, "description": "households, not visits"},
        "grids_total": integer,
        "grids_returned": integer,
        "late": {"type": "array", "items": string},
    }
    unreached = {
        "type": obj,
        "properties": {
            "grid": string,
            "number": integer,
            "head": nullable,
            "phone": {**string, "description": "masked: its first 3 and last 4 digits"},
            "in_group": boolean,
            "visited": boolean,
        },
    }
    coverage = {
        "type": obj,
        "properties": {
            **figures,
            "children": {
                "type": "array",
                "items": {"type": obj, "properties": figures},
                "description": "the same figures for each unit one level below",
            },
            "unreached": {
                "type": "array",
                "items": unreached,
                "description": "with households=1 only: the first 500 households not visited "
                "(for a group drive, or not in the group chat), in grid and number order",
            },
            "unreached_more": {**boolean, "description": "with households=1: the list was cut"},
        },
    }
    event = {"type": obj, "properties": {name: {} for name in _EVENT_FIELDS}}
    cid = _p("campaign_id", "integer")

    def answer(op: dict, schema: dict, status: str = "200") -> dict:
        op["responses"][status]["content"] = {"application/json": {"schema": schema}}
        return op

    def body(op: dict, schema: dict) -> dict:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        return op

    launch_op = body(
        answer(
            _op(
                "Launch a campaign (town leaders): one instance per target grid",
                ("201", None),
                errors=("400", "401", "403"),
            ),
            campaign,
            "201",
        ),
        launch,
    )
    visit_op = body(
        answer(
            _op(
                "Record one household's visit: 201, or 200 with the same visit for a repeated "
                "client_id; 400 for data failing the checklist; 404 for a household outside "
                "my grids",
                ("201", None),
                params=[cid],
                errors=("400", "401", "403", "404", "409"),
            ),
            visit,
            "201",
        ),
        visit_in,
    )
    visit_op["responses"]["200"] = {
        "description": "the visit already recorded with this client_id",
        "content": {"application/json": {"schema": visit}},
    }
    coverage_params = [
        cid,
        {**_q("unit"), "description": "a unit I cover (default: the campaign's town)"},
        {**_q("households", "boolean"), "description": "also list `unreached` households"},
    ]
    return {
        "/campaigns": {
            "post": launch_op,
            "get": answer(
                _op(
                    "Campaigns with a grid in my units, newest first, 20 at a time",
                    ("200", None),
                    params=[{**_q("cursor"), "description": "next_cursor of the page before"}],
                    errors=("400", "401"),
                ),
                {
                    "type": obj,
                    "properties": {
                        "items": {"type": "array", "items": campaign},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
            ),
        },
        "/campaigns/{campaign_id}": {
            "get": answer(
                _op("One campaign", ("200", None), params=[cid], errors=("401", "404")),
                campaign,
            )
        },
        "/campaigns/{campaign_id}/visits": {"post": visit_op},
        "/campaigns/{campaign_id}/events": {
            "get": answer(
                _op(
                    "The campaign's hash-chained events (launched, supervised, escalated, "
                    "returned, confirmed, closed), chained like a case's",
                    ("200", None),
                    params=[cid],
                    errors=("401", "404"),
                ),
                {
                    "type": obj,
                    "properties": {"events": {"type": "array", "items": event}, "head": string},
                },
            )
        },
        "/campaigns/{campaign_id}/coverage": {
            "get": answer(
                _op(
                    "Coverage of a unit over my grids of the campaign, with its children",
                    ("200", None),
                    params=coverage_params,
                    errors=("400", "401", "404"),
                ),
                coverage,
            )
        },
    }


_EVENT_FIELDS = ("case", "seq", "at", "type", "actor", "task", "data", "diagram", "hash")


def _campaign_refs(document: dict) -> None:
    """DESIGN §12 in the case and work-item answers: a case carries `campaign` ({id, title} of
    the campaign it came from, else null); a campaign's work item has `case: null` and
    `campaign: {id, title}`."""
    ref = {
        "type": "object",
        "nullable": True,
        "properties": {"id": {"type": "integer"}, "title": {"type": "string"}},
    }
    schemas_ = document.get("components", {}).get("schemas", {})
    if "CaseOut" in schemas_:
        schemas_["CaseOut"]["properties"]["campaign"] = {
            **ref,
            "description": "the campaign whose visit opened the case, else null",
        }
    if "WorkItemOut" in schemas_:
        item = schemas_["WorkItemOut"]["properties"]
        item["campaign"] = {
            **ref,
            "description": "only on a campaign's items (campaign_return, campaign_confirm)",
        }
        if "case" in item:
            item["case"] = {
                "allOf": [item["case"]],
                "nullable": True,
                "description": "null on a campaign's items",
            }
