"""Marshmallow schemas of the JSON API (DESIGN §8): what requests may carry, what answers hold.

Output schemas exist for the OpenAPI document; answers are built by the serializers in api.py.
"""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from engine.case_search import PERSON_ROLES, STATUSES, CaseFilters, UnitRef
from engine.photos import MAX_PER_STEP

# The days a filter or a period may name: wide enough for any record, narrow enough that a day
# before or after it is still a date.
DAYS = validate.Range(
    min=date(2000, 1, 1), max=date(2099, 12, 31), error="must be a day from 2000 to 2099"
)

# Categories and severities are the live bundle's (engine/words.py); the engine checks them when
# a case is opened. The six statuses are engine/case_search.py's, fixed by the contract (DESIGN §5).


class TokenIn(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TokenOut(Schema):
    token = fields.String()
    # Present (true) only while the person still has the organisation file's initial password.
    password_change_required = fields.Boolean()


class ReporterIn(Schema):
    name = fields.String(validate=validate.Length(max=100), load_default=None)
    phone = fields.String(
        validate=validate.Regexp(r"^[0-9+\- ]{3,32}$", error="not a phone number"),
        load_default=None,
    )


class CaseIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=4000))
    grid = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(min=1, max=32), load_default=None)
    severity = fields.String(validate=validate.Length(min=1, max=16), load_default=None)
    household = fields.String(validate=validate.Length(max=100), load_default=None)
    reporter = fields.Nested(ReporterIn, load_default=None)
    # Photos uploaded first (POST /photos), named by their sha256; the `opened` event lists them.
    photos = fields.List(
        fields.String(validate=validate.Regexp(r"^[0-9a-f]{64}$", error="not a photo's sha256")),
        validate=validate.Length(max=MAX_PER_STEP, error="at most {max} photos"),
        load_default=None,
    )


class CompleteIn(Schema):
    data = fields.Dict(required=True, keys=fields.String())


class TransferIn(Schema):
    """转办: the code of the grid the case belongs to, and why."""

    to = fields.String(required=True, validate=validate.Length(min=1, max=64))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class CaseListArgs(Schema):
    """GET /cases: the case browser's filters (engine/case_search.py), each optional. `from` and
    `to` are days in Asia/Shanghai, both inclusive; `escalated` is "escalated at least N times"."""

    number = fields.String(validate=validate.Length(min=1, max=32))  # a prefix, any case
    unit = fields.String(validate=validate.Length(min=1, max=64))
    person = fields.String(validate=validate.Length(min=1, max=100))  # a username or full name
    person_as = fields.String(load_default="any", validate=validate.OneOf(PERSON_ROLES))
    category = fields.String(validate=validate.Length(min=1, max=32))
    status = fields.String(validate=validate.OneOf((*STATUSES, "open")))
    from_ = fields.Date(data_key="from", validate=DAYS)
    to = fields.Date(validate=DAYS)
    overdue = fields.Boolean()
    escalated = fields.Integer(validate=validate.Range(min=1, max=1000))
    cursor = fields.String()

    DAYS_OUT_OF_ORDER = "must not be before from"

    @validates_schema
    def _days_in_order(self, data: dict, **_kwargs) -> None:
        if "from_" in data and "to" in data and data["from_"] > data["to"]:
            raise ValidationError(self.DAYS_OUT_OF_ORDER, field_name="to")

    @staticmethod
    def filters(args: dict, unit: UnitRef | None) -> CaseFilters:
        """The engine's filters from loaded args, with the unit the adapter resolved (and
        checked the caller covers): the API and the page build them the same way."""
        return CaseFilters(
            number=args.get("number"),
            unit=unit,
            person=args.get("person"),
            person_as=args.get("person_as", "any"),
            category=args.get("category"),
            status=args.get("status"),
            opened_from=args.get("from_"),
            opened_to=args.get("to"),
            overdue=args.get("overdue"),
            escalated_min=args.get("escalated"),
        )


class InboxArgs(Schema):
    overdue = fields.Boolean()
    category = fields.String(validate=validate.Length(min=1, max=32))
    cursor = fields.String()


class UnitOut(Schema):
    code = fields.String()
    name = fields.String()
    level = fields.String()


class PositionOut(Schema):
    role = fields.String()
    unit = fields.Nested(UnitOut)


class MeOut(Schema):
    username = fields.String()
    name = fields.String()
    positions = fields.List(fields.Nested(PositionOut))


class GridOut(Schema):
    code = fields.String()
    name = fields.String()


class CaseOut(Schema):
    number = fields.String()
    title = fields.String()
    description = fields.String()
    category = fields.String(allow_none=True)
    severity = fields.String(allow_none=True)
    status = fields.String()
    tier = fields.String(allow_none=True)
    grid = fields.Nested(GridOut)
    owner = fields.String(allow_none=True)
    holder = fields.String(allow_none=True)
    due_at = fields.String(allow_none=True)
    overdue = fields.Boolean()
    opened_at = fields.String()
    closed_at = fields.String(allow_none=True)
    satisfaction = fields.String(allow_none=True)
    reopen_count = fields.Integer()
    diagram = fields.String()


class CaseRefOut(Schema):
    number = fields.String()
    title = fields.String()
    category = fields.String(allow_none=True)
    severity = fields.String(allow_none=True)
    grid = fields.Nested(GridOut)


class WorkItemOut(Schema):
    id = fields.Integer()
    task = fields.String()
    name = fields.String()
    role = fields.String()
    unit = fields.Nested(GridOut)
    case = fields.Nested(CaseRefOut)
    created_at = fields.String()
    due_at = fields.String(allow_none=True)
    overdue = fields.Boolean()
    claimed_by = fields.String(allow_none=True)
    form = fields.Dict()


class CasePage(Schema):
    items = fields.List(fields.Nested(CaseOut))
    next_cursor = fields.String(allow_none=True)


class InboxPage(Schema):
    items = fields.List(fields.Nested(WorkItemOut))
    next_cursor = fields.String(allow_none=True)


class EventOut(Schema):
    case = fields.String()
    seq = fields.Integer()
    at = fields.String()
    type = fields.String()
    actor = fields.String()
    task = fields.String(allow_none=True)
    data = fields.Dict()
    diagram = fields.String()
    hash = fields.String()


class EventsOut(Schema):
    events = fields.List(fields.Nested(EventOut))
    head = fields.String()


class ErrorBody(Schema):
    code = fields.String()
    message = fields.String()
    fields = fields.Dict(keys=fields.String(), values=fields.String())


class ErrorOut(Schema):
    error = fields.Nested(ErrorBody)


class PhotoOut(Schema):
    sha256 = fields.String()  # what an opening or a task's `photos` names it by
    content_type = fields.String()
    size = fields.Integer()
    kept_location = fields.Boolean()  # the stored file keeps a location its uploader kept


class DelegationIn(Schema):
    """代理: the colleague (username) and the days, both inclusive, in Asia/Shanghai."""

    delegate = fields.String(required=True, validate=validate.Length(min=1, max=64))
    from_ = fields.Date(required=True, data_key="from")
    to = fields.Date(required=True)


class PersonRefOut(Schema):
    username = fields.String()
    name = fields.String()


class DelegationOut(Schema):
    id = fields.Integer()
    delegator = fields.Nested(PersonRefOut)
    delegate = fields.Nested(PersonRefOut)
    from_ = fields.String(data_key="from")  # the first day, YYYY-MM-DD (Asia/Shanghai)
    to = fields.String()  # the last day, inclusive
    starts_at = fields.String()  # the first day's midnight in Asia/Shanghai, as UTC
    ends_at = fields.String()  # the midnight after the last day, as UTC
    created_at = fields.String()
    revoked_at = fields.String(allow_none=True)
    status = fields.String()  # active, upcoming, ended or revoked


class DelegationPage(Schema):
    items = fields.List(fields.Nested(DelegationOut))


class StatsArgs(Schema):
    """GET /stats (DESIGN §11): a unit the caller covers (default: the widest), two Asia/Shanghai
    days, both inclusive (default: this year up to today), and optionally one category."""

    unit = fields.String(validate=validate.Length(min=1, max=64))
    from_ = fields.Date(data_key="from", validate=DAYS)
    to = fields.Date(validate=DAYS)
    category = fields.String(validate=validate.Length(min=1, max=32))

    @validates_schema
    def _days_in_order(self, data: dict, **_kwargs) -> None:
        if "from_" in data and "to" in data and data["from_"] > data["to"]:
            raise ValidationError(CaseListArgs.DAYS_OUT_OF_ORDER, field_name="to")
