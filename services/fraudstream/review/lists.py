"""Block/allow list changes asked from a case, applied to the scorer's lists (Redis) only
after a second person approves them (four eyes); every step is audited."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from fraudstream.review.auth import Principal, Role
from fraudstream.review.schema import Case, ListRequest
from fraudstream.review.store import CaseError, CaseStore, audit
from fraudstream.rules.model import ListEntity, ListName

# Which case field a list entry is taken from (reviewers never type ids by hand).
FIELDS = {
    ListEntity.CARD: "card_token",
    ListEntity.MERCHANT: "merchant_id",
    ListEntity.DEVICE: "device_id",
    ListEntity.IP: "ip",
}
Apply = Callable[[ListName, ListEntity, str], None]


def request_change(
    store: CaseStore,
    transaction_id: str,
    principal: Principal,
    *,
    name: ListName,
    entity: ListEntity,
    reason: str,
    now: datetime,
) -> ListRequest:
    """Ask to put the case's card, merchant, device or IP on a list."""
    if not reason.strip():
        raise CaseError("say why this belongs on the list (a note is required)")
    with store.sessions.begin() as db:
        found = db.get(Case, transaction_id)
        if found is None:
            raise CaseError("no such case")
        value = getattr(found, FIELDS[entity])
        if not value:
            raise CaseError(f"this case has no {entity.value}")
        request = ListRequest(
            transaction_id=transaction_id,
            list_name=name.value,
            entity=entity.value,
            value=value,
            reason=reason.strip()[:1024],
            requested_by=principal.username,
            requested_at=now,
            status="pending",
        )
        db.add(request)
        db.flush()
        audit(
            db,
            principal.username,
            "list_request",
            transaction_id,
            now,
            {"id": request.id, "list": name.value, "entity": entity.value},
        )
        return request


def decide_change(
    store: CaseStore,
    request_id: int,
    principal: Principal,
    *,
    approve: bool,
    apply: Apply,
    now: datetime,
) -> ListRequest:
    """Approve (and apply) or refuse a pending request; never the requester's own. The
    list is changed before the approval commits: if the commit fails, the request stays
    pending and approving it again adds the same entry (list adds are idempotent)."""
    if not principal.at_least(Role.LEAD):
        raise CaseError("list changes are approved by leads and admins")
    with store.sessions.begin() as db:
        request = db.get(ListRequest, request_id, with_for_update=True)
        if request is None or request.status != "pending":
            raise CaseError("this request is not pending")
        if request.requested_by == principal.username:
            raise CaseError("a second person must approve your own request")
        if approve:
            apply(ListName(request.list_name), ListEntity(request.entity), request.value)
        request.status = "approved" if approve else "refused"
        request.decided_by, request.decided_at = principal.username, now
        audit(
            db,
            principal.username,
            "list_approve" if approve else "list_refuse",
            request.transaction_id,
            now,
            {"id": request.id, "list": request.list_name, "entity": request.entity},
        )
        return request


def pending(store: CaseStore) -> list[ListRequest]:
    with store.sessions() as db:
        query = select(ListRequest).where(ListRequest.status == "pending")
        return list(db.scalars(query.order_by(ListRequest.requested_at)))
