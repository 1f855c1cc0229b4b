"""Welcomes new users, in Python: the `user.created` -> `notification.email` flow of
the Rust `user-notifications`, against the same `techub:platform/plugin` world.

On `user.created` it caches the user's profile in the `users` domain (tagged with the
user), counts the welcome in its store, and publishes a `notification.email` asking
for the welcome email, correlated with the event. A payload without a usable id or
email is rejected (dead-lettered); a backend that is down is a retry.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import (
    Delivery,
    Outcome,
    Outcome_Ok,
    Outcome_Reject,
    Outcome_Retry,
    Subscription,
)
from wit_world.imports import cache, config, log, messaging, store


class Handler(exports.Handler):
    def subscriptions(self) -> list[Subscription]:
        return [Subscription("notification", ["user.created"], ["notification.email"])]

    def handle(self, message: Delivery) -> Outcome:
        try:
            user = json.loads(message.payload)
        except ValueError as error:
            return Outcome_Reject(f"payload is not JSON: {error}")
        if not isinstance(user, dict):
            return Outcome_Reject("payload is not a JSON object")
        user_id, email = user.get("id"), user.get("email")
        if not isinstance(user_id, str) or not user_id or "@" not in str(email):
            return Outcome_Reject(f"user {user_id!r} has no usable id or email")
        try:
            welcome(message, user)
        except Err as error:
            # A typed error of an import: the backend or a quota; try again later.
            return Outcome_Retry(f"{type(error.value).__name__}: {error.value}")
        return Outcome_Ok()


def welcome(message: Delivery, user: dict) -> None:
    user_id = user["id"]
    options = cache.EntryOptions(None, [f"user:{user_id}"], cache.Priority.MEDIUM)
    cache.set("users", user_id, json.dumps(user).encode(), options)
    welcomed = store.incr_by("welcomed", 1)
    email = {
        "template": "welcome",
        "to": user["email"],
        "from": config.get("sender") or "noreply@techub.example",
        "name": user.get("name", ""),
        "user_id": user_id,
    }
    published = messaging.publish(
        "notification.email",
        json.dumps(email).encode(),
        messaging.PublishOptions(
            priority=None,
            persistent=True,
            expiration_ms=None,
            delay_ms=None,
            correlation_id=message.correlation_id or message.id,
            reply_to=None,
            headers=[],
            message_id=None,
        ),
    )
    log.write(
        log.Level.INFO,
        "welcome email requested",
        [("user", user_id), ("message", published), ("welcomed", str(welcomed))],
    )
