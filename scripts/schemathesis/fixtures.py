"""Fixtures for the schemathesis runs, made through the API itself (a fresh database).

Usage: fixtures.py API_BASE_URL OUT_DIR
Writes OUT_DIR/fixtures.json (read by hooks_2xx.py) and OUT_DIR/fixtures.env (shell exports
read by the run script and, through `${VAR}`, by the *.toml files).

- the main run's organizer (token only: the fuzzer reuses any email it sees in POST /auth/login
  with wrong passwords, which locks that account) with one event, a paid tier with a discount,
  a free tier, a paid order (through the payment sandbox) and a free ticket;
- the attendee (no organizer profile);
- for the 2xx-coverage run: its own organizer and events (one to cancel, one to patch), a paid
  order, a free ticket and its QR file, and one throwaway user per operation that spends or
  changes its account (login, password reset by OTP and by reset token, 2FA verify and disable,
  delete, becoming an organizer, logout).
"""
import json
import os
import re
import shlex
import sys
import time
import uuid

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from totp import totp  # noqa: E402

API, OUT = sys.argv[1].rstrip("/"), sys.argv[2]
session = requests.Session()


def call(method, path, token=None, expect=None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    r = session.request(method, API + path, headers=headers, timeout=30, **kw)
    if expect is not None and r.status_code != expect:
        raise SystemExit(f"fixtures: {method} {path}: expected {expect}, got {r.status_code} {r.text[:300]}")
    return r


def wait_for(what, probe):
    for _ in range(100):
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"fixtures: timed out waiting for {what}")


def signup(tag, password="a long password"):
    email = f"st-{tag}-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": password, "first_name": "Test", "last_name": tag}
    r = call("POST", "/auth/signup", expect=201, json=body)
    return {"email": email, "password": password, "token": r.json()["access_token"]}


def outbox(to, kind=None):
    def probe():
        for mail in call("GET", "/dev/outbox", expect=200).json()["items"]:
            if mail["to"] == to and (kind is None or mail["kind"] == kind):
                return mail
        return None
    return wait_for(f"a mail to {to} ({kind or 'any'})", probe)


def become_organizer(user, name):
    body = {"name": name, "email": f"{uuid.uuid4().hex[:8]}@example.com", "phone": "08012345678",
            "bank_code": "058", "account_number": "0123456789"}
    call("POST", "/users/organizer", user["token"], 201, json=body)


def event(owner, title):
    body = {"title": title, "description": "Live", "category": "music", "venue": "Eko Hotel",
            "address": "Adetokunbo Ademola St", "city": "Lagos", "country": "NG", "latitude": 6.43,
            "longitude": 3.42, "starts_at": "2030-03-01T18:00:00Z", "ends_at": "2030-03-01T23:00:00Z"}
    return call("POST", "/events/create", owner["token"], 201, json=body).json()["id"]


def tiers(owner, event_id):
    call("POST", f"/events/{event_id}/tickets/add", owner["token"], 201,
         json={"name": "Regular", "price": 500000, "quantity": 100000,
               "discount": {"price": 400000, "quantity": 100, "expires_at": "2029-01-01T00:00:00Z"}})
    call("POST", f"/events/{event_id}/tickets/add", owner["token"], 201,
         json={"name": "Free", "price": 0, "quantity": 100000})


def buy(owner, event_id, tier):
    return call("POST", f"/events/{event_id}/tickets/purchase", owner["token"], 201,
                json={"tier": tier, "quantity": 1}, headers={"idempotency-key": uuid.uuid4().hex}).json()


def paid_order(owner, event_id):
    order = buy(owner, event_id, "Regular")
    call("POST", f"/sandbox/checkout/{order['reference']}/pay")
    wait_for(f"order {order['reference']} to be paid", lambda: call(
        "GET", f"/payments/transactions/{order['reference']}", owner["token"], 200).json()["status"] == "paid")
    return order


# --- main and attendee runs ---------------------------------------------------------------
main_org = signup("org")
become_organizer(main_org, "ST Shows")
main_event = event(main_org, "Seed Night")
tiers(main_org, main_event)
paid_order(main_org, main_event)
buy(main_org, main_event, "Free")
attendee = signup("att")

# --- 2xx-coverage run ---------------------------------------------------------------------
org = signup("org2")
become_organizer(org, "ST2 Shows")
ev, ev_cancel, ev_patch = event(org, "Main"), event(org, "To cancel"), event(org, "To patch")
tiers(org, ev)
order = paid_order(org, ev)
free = buy(org, ev, "Free")
access_key = free["tickets"][0]["access_key"]


def qr_link():
    for mail in call("GET", "/dev/outbox", expect=200).json()["items"]:
        if mail["to"] == org["email"]:
            hit = re.search(r"/tickets/qr/([A-Za-z0-9_\-]+\.png)", json.dumps(mail))
            if hit:
                return hit.group(1)
    return None


qr_file = wait_for("the ticket mail with a QR link", qr_link)

login = signup("login")
reset_verify = signup("resetverify")
call("POST", "/auth/password/reset", expect=202, json={"email": reset_verify["email"]})
reset_verify["otp"] = re.search(r"\b(\d{6})\b", outbox(reset_verify["email"], "password_reset")["text"]).group(1)
reset_new = signup("resetnew")
call("POST", "/auth/password/reset", expect=202, json={"email": reset_new["email"]})
otp = re.search(r"\b(\d{6})\b", outbox(reset_new["email"], "password_reset")["text"]).group(1)
reset_new["reset_token"] = call("POST", "/auth/password/verify-otp", expect=200,
                                json={"email": reset_new["email"], "otp": otp}).json()["reset_token"]
tfa_verify = signup("2faverify")
tfa_verify["secret"] = call("POST", "/auth/2fa/enable", tfa_verify["token"], 200).json()["secret"]
tfa_disable = signup("2fadisable")
tfa_disable["secret"] = call("POST", "/auth/2fa/enable", tfa_disable["token"], 200).json()["secret"]
call("POST", "/auth/2fa/verify", tfa_disable["token"], 200, json={"code": totp(tfa_disable["secret"])})
deleter = signup("delete")
new_org = signup("neworg")
logout_for_hooks = signup("logout2")
# the logout run's user: it logs in again after each logout revokes its token
logout_user = signup("logout")

fixtures = dict(
    org=org, event=ev, event_cancel=ev_cancel, event_patch=ev_patch, order_id=order["id"],
    reference=order["reference"], access_key=access_key, qr_file=qr_file, login=login,
    reset_verify=reset_verify, reset_new=reset_new, tfa_verify=tfa_verify, tfa_disable=tfa_disable,
    delete=deleter, new_org=new_org, logout=logout_for_hooks,
)
with open(os.path.join(OUT, "fixtures.json"), "w") as f:
    json.dump(fixtures, f, indent=1)

exports = {
    "ST_ORG_TOKEN": main_org["token"], "ST_ATT_TOKEN": attendee["token"],
    "ST_LOGOUT_EMAIL": logout_user["email"], "ST_LOGOUT_PASSWORD": logout_user["password"],
    "ST2_EVENT": ev, "ST2_EVENT_CANCEL": ev_cancel, "ST2_EVENT_PATCH": ev_patch,
    "ST2_ORDER_ID": order["id"], "ST2_REF": order["reference"], "ST2_QR_FILE": qr_file,
}
with open(os.path.join(OUT, "fixtures.env"), "w") as f:
    for name, value in exports.items():
        f.write(f"export {name}={shlex.quote(value)}\n")
print(f"fixtures: written to {OUT}")
