"""Delivering the outbox: one run posts the notifications that are due, outside every case
transaction, on a session of its own and at the root's clock.

Steps write outbox rows in their own transaction (engine/notify.py, `on_step`). How a row is
delivered stays beside those rows in engine/notify.py (`deliver_due`): a lease per row, so that
any number of deliverers may run at once and none posts a row twice; retries with backoff; and
posts only to checked addresses, the policy the organisation import applies too. What is here is
the job around it: which session, which instant, and who runs it. The web server's ticker runs it
every five seconds, and so does the process of `gridloop worker` that runs the scheduler, so that
people are notified with or without a web server.
"""

from __future__ import annotations

from engine import notify

from .root import Root


def deliver(root: Root, post: notify.Post | None = None) -> int:
    """Post the notifications that are due now; how many were delivered. A failed post is the
    row's business (recorded, retried later), never raised here."""
    with root.session() as session:
        return notify.deliver_due(session, root.clock.now(), post)
