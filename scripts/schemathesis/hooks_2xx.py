"""Hooks for the 2xx-coverage run (SCHEMATHESIS_HOOKS=<this file>, --mode positive).

Fixtures come from fixtures.py (ST_FIXTURES=<out>/fixtures.json). Path and query values are set in
coverage.toml (`parameters`); here: the token per operation, and the bodies that need a secret, a
server-side state or a value the schema does not constrain (lengths, formats, known names)."""
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

import schemathesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from totp import totp  # noqa: E402

with open(os.environ["ST_FIXTURES"]) as f:
    FX = json.load(f)
# src/config.rs SANDBOX_SECRET_KEY: what the app signs and checks Paystack webhooks with when no
# PAYSTACK_SECRET_KEY is set (development only).
PAYSTACK_SANDBOX_KEY = b"sk_sandbox_development_only_not_a_real_key"

# One account per operation that spends or changes its account; the organizer for the rest.
TOKENS = {
    "POST /auth/2fa/verify": FX["tfa_verify"]["token"],
    "POST /auth/2fa/disable": FX["tfa_disable"]["token"],
    "DELETE /users/profile": FX["delete"]["token"],
    "POST /users/organizer": FX["new_org"]["token"],
    "POST /auth/logout": FX["logout"]["token"],
}


@schemathesis.auth(refresh_interval=None)
class PerOperationToken:
    def get(self, case, ctx):
        return TOKENS.get(ctx.operation.label, FX["org"]["token"])

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


BODIES = {
    "POST /auth/signup": lambda: {"email": f"st-su-{uuid.uuid4().hex[:10]}@example.com",
                                  "password": "a long password", "first_name": "Su", "last_name": "Test"},
    "POST /auth/login": lambda: {"email": FX["login"]["email"], "password": FX["login"]["password"]},
    "POST /auth/password/verify-otp": lambda: {"email": FX["reset_verify"]["email"], "otp": FX["reset_verify"]["otp"]},
    "POST /auth/password/new": lambda: {"reset_token": FX["reset_new"]["reset_token"],
                                        "new_password": "another long password"},
    "POST /auth/2fa/verify": lambda: {"code": totp(FX["tfa_verify"]["secret"])},
    # the confirming code was this step's; the next step's is inside the ±1 window and unused
    "POST /auth/2fa/disable": lambda: {"code": totp(FX["tfa_disable"]["secret"], time.time() + 30)},
    "DELETE /users/profile": lambda: {"password": FX["delete"]["password"]},
    "POST /users/organizer": lambda: {"name": "New Org", "email": "neworg@example.com", "phone": "08012345678",
                                      "bank_code": "058", "account_number": "0123456789"},
    "POST /events/create": lambda: {"title": "Hooked", "description": "Live", "category": "music",
                                    "venue": "Eko Hotel", "address": "Adetokunbo Ademola St", "city": "Lagos",
                                    "country": "NG", "latitude": 6.43, "longitude": 3.42,
                                    "starts_at": "2031-03-01T18:00:00Z", "ends_at": "2031-03-01T23:00:00Z"},
    "PATCH /events/{event_id}": lambda: {"title": "Patched"},
    "POST /events/{event_id}/cancel": lambda: {"reason": "schemathesis"},
    "POST /events/{event_id}/orders/{order_id}/refund": lambda: {"reason": "schemathesis"},
    "POST /events/{event_id}/tickets/add": lambda: {"name": f"T-{uuid.uuid4().hex[:8]}", "price": 1000, "quantity": 10},
    "POST /events/{event_id}/tickets/purchase": lambda: {"tier": "Regular", "quantity": 1},
    "POST /events/{event_id}/tickets/validate": lambda: {"access_key": FX["access_key"], "gate": "north"},
    "POST /events/{event_id}/tickets/validate/batch": lambda: {
        "scans": [{"access_key": FX["access_key"], "scanned_at": now_iso(), "gate": "south"}]},
    "POST /events/nearby": lambda: {"latitude": 6.43, "longitude": 3.42},
    "PATCH /users/profile": lambda: {"first_name": "Ada"},
}


@schemathesis.hook
def before_call(context, case, kwargs):
    label = case.operation.label
    make = BODIES.get(label)
    if make is not None:
        case.body = make()
    if label == "POST /payments/callback":
        # A signed Paystack webhook for an unknown reference (acknowledged, changes nothing).
        # The signature covers the exact bytes, so they are sent as they were signed.
        raw = json.dumps({"event": "charge.success", "data": {
            "reference": f"ord-unknown-{uuid.uuid4().hex}", "amount": 1000, "status": "success"}}).encode()
        kwargs.pop("json", None)
        kwargs["data"] = raw
        case.headers = {**(case.headers or {}), "Content-Type": "application/json",
                        "x-paystack-signature": hmac.new(PAYSTACK_SANDBOX_KEY, raw, hashlib.sha512).hexdigest()}
    if case.query and "limit" in case.query:
        case.query["limit"] = 20
