"""Notices to the owner (SMS, e-mail) through a durable outbox: nothing lost while a channel is down."""

from callassist.notify.notices import build_notifiers, close_notifiers, enqueue_call_notices
from callassist.notify.outbox import DeliveryError, Notice, OutboxWorker, Sender, enqueue

__all__ = [
    "DeliveryError",
    "Notice",
    "OutboxWorker",
    "Sender",
    "build_notifiers",
    "close_notifiers",
    "enqueue",
    "enqueue_call_notices",
]
