"""Interop check: Authlib's OAuth2Session runs the authorization code journey of SPEC §6.

    tests/interop/.venv/bin/python tests/interop/authlib_code.py --issuer http://127.0.0.1:5000 \
        [--client-id web] [--client-secret secret] \
        [--redirect-uri http://127.0.0.1:5002/callback] [--username alice] [--password alice]

1. OpenID Connect discovery; OAuth2Session (authlib.integrations.requests_client) with
   code_challenge_method="S256" builds the authorization URL with a code_verifier, a nonce and
   two resource indicators (urn:invoices, urn:products).
2. The login form, driven over HTTP with requests (cookies kept, hidden inputs read from the
   page, the 303's Location taken without following it); state and iss (RFC 9207) checked.
3. fetch_token with the callback URL, the code_verifier and resource=urn:invoices; the access
   token verified with joserfc as an RFC 9068 token for urn:invoices alone, the ID token with
   joserfc and Authlib's CodeIDToken claims (iss, aud, nonce, at_hash).
4. refresh_token with resource=urn:products: a token for urn:products alone.
5. introspect_token as the urn:products API (client_secret_post): active; revoke_token of the refresh token, after
   which refresh_token fails with invalid_grant.
Exits 0 when everything holds, 1 with "FAILED" and a message on stderr otherwise.

Authlib refuses plain http except on loopback addresses (RFC 8252 §7.3; see
authlib.common.security.is_secure_transport), so the 127.0.0.1 issuer needs no relaxation:
this script removes AUTHLIB_INSECURE_TRANSPORT from its environment so that the check is never
switched off.
"""

import argparse
import os
import secrets
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

SCOPE = "openid profile read offline_access"
RESOURCES = ["urn:invoices", "urn:products"]
TIMEOUT_SECONDS = 10


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


class LoginPage(HTMLParser):
    """The login page's forms, inputs and alert text."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self.inputs = []
        self.alert = None
        self._in_alert = False

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(attrs)
        elif tag == "input":
            self.inputs.append(attrs)
        elif tag == "p" and attrs.get("role") == "alert":
            self._in_alert = True
            self.alert = ""

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_alert = False

    def handle_data(self, data):
        if self._in_alert:
            self.alert += data


def log_in(authorize_url, username, password):
    """Signs in on the login page over HTTP and returns the redirect's Location."""
    browser = requests.Session()
    page = browser.get(authorize_url, allow_redirects=False, timeout=TIMEOUT_SECONDS,
                       headers={"Accept": "text/html"})
    check(page.status_code == 200,
          f"GET /connect/authorize: HTTP {page.status_code}, expected the login page")
    check(page.headers.get("Content-Type", "").startswith("text/html"),
          f"GET /connect/authorize: Content-Type {page.headers.get('Content-Type')}")
    check(len(browser.cookies) > 0, "the login page set no cookie")
    parsed = LoginPage()
    parsed.feed(page.text)
    check(len(parsed.forms) == 1, f"the login page has {len(parsed.forms)} forms, expected one")
    form = parsed.forms[0]
    check(form.get("method", "get").lower() == "post", "the login form does not post")
    action = urljoin(page.url, form.get("action", ""))
    fields = {i["name"]: i.get("value", "") for i in parsed.inputs if i.get("type") == "hidden"}
    for name in ("request", "csrf"):
        check(fields.get(name), f"the login form has no hidden input {name}")
    names = {i.get("name") for i in parsed.inputs}
    check({"username", "password"} <= names, f"the login form's inputs are {sorted(names)}")
    print(f"ok login page: form posts to {urlsplit(action).path}, hidden inputs "
          f"{', '.join(fields)}, cookies {', '.join(browser.cookies.keys())}")
    fields.update(username=username, password=password)
    answer = browser.post(action, data=fields, allow_redirects=False, timeout=TIMEOUT_SECONDS)
    if answer.status_code != 303 or "Location" not in answer.headers:
        again = LoginPage()
        again.feed(answer.text)
        said = f" (the page says: {again.alert.strip()})" if again.alert else ""
        raise CheckFailed(f"POST {urlsplit(action).path}: HTTP {answer.status_code}, "
                          f"expected a 303 redirect to the client{said}")
    return urljoin(action, answer.headers["Location"])


def verify_access_token(token, keys, issuer, resource, what):
    """joserfc: signature, typ at+jwt (RFC 9068), iss, aud = resource alone, no identity scope."""
    try:
        decoded = jwt.decode(token, keys)
    except JoseError as e:
        raise CheckFailed(f"{what}: joserfc rejects the access token: {type(e).__name__}: {e}") from e
    check(decoded.header.get("typ") == "at+jwt", f"{what}: typ is {decoded.header.get('typ')!r}")
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": resource},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        client_id={"essential": True},
        scope={"essential": True},
    )
    try:
        registry.validate(decoded.claims)
    except JoseError as e:
        raise CheckFailed(f"{what}: the access token's claims: {type(e).__name__}: {e}") from e
    claims = decoded.claims
    check(claims["aud"] == resource, f"{what}: aud is {claims['aud']!r}, expected exactly {resource!r}")
    scopes = claims["scope"].split(" ")
    check("read" in scopes, f"{what}: scope {claims['scope']!r} lacks read")
    check("openid" not in scopes and "profile" not in scopes,
          f"{what}: scope {claims['scope']!r} carries identity scopes (SPEC §3 rule 5)")
    return decoded


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--client-id", default="web")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:5002/callback")
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password", default="alice")
    args = parser.parse_args()
    issuer = args.issuer

    # Authlib reads this at every check; drop it so transport security is always checked.
    if os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None) is not None:
        print("note: ignoring AUTHLIB_INSECURE_TRANSPORT", file=sys.stderr)

    metadata = requests.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration",
                            timeout=TIMEOUT_SECONDS).json()
    check(metadata.get("issuer") == issuer, f"discovery: issuer is {metadata.get('issuer')!r}")
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=TIMEOUT_SECONDS).json())
    print(f"ok discovery: {metadata['authorization_endpoint']}")

    session = OAuth2Session(
        client_id=args.client_id,
        client_secret=args.client_secret,
        scope=SCOPE,
        redirect_uri=args.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    session.timeout = TIMEOUT_SECONDS
    code_verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    authorize_url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce,
        resource=RESOURCES)
    query = parse_qs(urlsplit(authorize_url).query)
    check(query.get("resource") == RESOURCES, f"the authorization URL carries resource {query.get('resource')}")
    check(query.get("code_challenge_method") == ["S256"] and query.get("code_challenge"),
          "the authorization URL has no S256 code_challenge")

    callback = log_in(authorize_url, args.username, args.password)
    parts = urlsplit(callback)
    check(f"{parts.scheme}://{parts.netloc}{parts.path}" == args.redirect_uri,
          f"the login redirected to {parts.scheme}://{parts.netloc}{parts.path}")
    answer = parse_qs(parts.query)
    check("code" in answer, f"the redirect has no code: {sorted(answer)} {answer.get('error')}")
    # RFC 9207 §2.4: the client compares iss with the issuer it sent the user to.
    check(answer.get("iss") == [issuer], f"the redirect's iss is {answer.get('iss')}, expected {issuer}")
    print(f"ok login: 303 to {args.redirect_uri} with {', '.join(answer)}")

    # fetch_token checks state itself (MismatchingStateException).
    token = session.fetch_token(metadata["token_endpoint"], authorization_response=callback,
                                state=state, code_verifier=code_verifier, resource="urn:invoices")
    check(token.get("token_type", "").lower() == "bearer", f"token_type is {token.get('token_type')!r}")
    check("refresh_token" in token, "fetch_token: no refresh_token although offline_access was granted")
    invoices = verify_access_token(token["access_token"], keys, issuer, "urn:invoices", "fetch_token")
    print(f"ok fetch_token: access token alg={invoices.header['alg']} aud={invoices.claims['aud']} "
          f"scope=\"{invoices.claims['scope']}\"")

    check("id_token" in token, "fetch_token: no id_token although openid was granted")
    try:
        id_token = jwt.decode(token["id_token"], keys)
    except JoseError as e:
        raise CheckFailed(f"joserfc rejects the ID token: {type(e).__name__}: {e}") from e
    claims = CodeIDToken(
        id_token.claims, id_token.header,
        options={"iss": {"essential": True, "value": issuer},
                 "aud": {"essential": True, "value": args.client_id}},
        params={"nonce": nonce, "client_id": args.client_id, "access_token": token["access_token"]},
    )
    try:
        claims.validate()
    except JoseError as e:
        raise CheckFailed(f"Authlib's CodeIDToken rejects the ID token: {type(e).__name__}: {e}") from e
    check("at_hash" in claims, "the ID token has no at_hash")
    check(claims["sub"] == invoices.claims["sub"], "the ID token and the access token name different users")
    print(f"ok id_token: alg={id_token.header['alg']} aud={claims['aud']} sub={claims['sub']} "
          "(CodeIDToken: iss, aud, nonce, at_hash)")

    refreshed = session.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"],
                                      resource="urn:products")
    products = verify_access_token(refreshed["access_token"], keys, issuer, "urn:products", "refresh_token")
    check(products.claims["sub"] == invoices.claims["sub"], "refresh_token: the access token is for another user")
    print(f"ok refresh_token: aud={products.claims['aud']} scope=\"{products.claims['scope']}\"")

    # The products API asks about the token it was given (RFC 7662), with its own secret.
    # client_secret_post, because Authlib's client_secret_basic puts the client_id into the
    # Basic header without the form-encoding of RFC 6749 §2.3.1, so "urn:products:secret"
    # reads as user "urn" (RFC 7617: the user-id cannot contain a colon); isogate decodes
    # "urn%3Aproducts" correctly, which Authlib never sends.
    api = OAuth2Session(client_id="urn:products", client_secret="secret",
                        token_endpoint_auth_method="client_secret_post")
    api.timeout = TIMEOUT_SECONDS
    introspected = api.introspect_token(metadata["introspection_endpoint"],
                                        token=refreshed["access_token"], token_type_hint="access_token")
    check(introspected.status_code == 200, f"introspect_token: HTTP {introspected.status_code}")
    info = introspected.json()
    check(info.get("active") is True and info.get("sub") == invoices.claims["sub"],
          f"introspect_token: active={info.get('active')!r} sub={info.get('sub')!r}")
    print(f"ok introspect_token as urn:products: active, scope=\"{info.get('scope')}\"")

    current = refreshed["refresh_token"]
    revoked = session.revoke_token(metadata["revocation_endpoint"], token=current,
                                   token_type_hint="refresh_token")
    check(revoked.status_code == 200, f"revoke_token: HTTP {revoked.status_code}")
    try:
        session.refresh_token(metadata["token_endpoint"], refresh_token=current, resource="urn:invoices")
    except OAuthError as e:
        check(e.error == "invalid_grant", f"refresh_token after revoke_token: {e.error}, expected invalid_grant")
    else:
        raise CheckFailed("refresh_token after revoke_token: isogate issued a token")
    print("ok revoke_token: the refresh token no longer works (invalid_grant)")
    print("Authlib code flow interop: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"Authlib code flow interop FAILED\n{e}", file=sys.stderr)
        sys.exit(1)
    except OAuthError as e:  # what OAuth2Session raises for an error response
        print(f"Authlib code flow interop FAILED\n{type(e).__name__}: {e.error}: {e.description}",
              file=sys.stderr)
        sys.exit(1)
    except requests.RequestException as e:
        print(f"Authlib code flow interop FAILED\n{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
