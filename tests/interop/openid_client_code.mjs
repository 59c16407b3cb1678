// Interop check: openid-client v6 runs the authorization code journey of SPEC §6 against a
// running isogate, with jose verifying every access token.
//
//   node tests/interop/openid_client_code.mjs --issuer http://127.0.0.1:5000 \
//     [--client-id web] [--client-secret secret] [--redirect-uri http://127.0.0.1:5002/callback] \
//     [--username alice] [--password alice]
//
// 1. OpenID Connect discovery; PKCE S256 verifier and challenge, state and nonce from
//    openid-client; buildAuthorizationUrl with scope "openid profile read offline_access" and
//    two resource indicators (urn:invoices, urn:products).
// 2. The login form, driven over HTTP (login_form.mjs); the 303's Location is the callback.
// 3. authorizationCodeGrant with resource=urn:invoices: openid-client checks state, iss
//    (RFC 9207), the ID token (signature, iss, aud, nonce, expiry); jose checks the access
//    token is an RFC 9068 token for urn:invoices alone; at_hash is checked here.
// 4. refreshTokenGrant with resource=urn:products: a token for urn:products alone.
// 5. refreshTokenGrant with a resource never granted: invalid_target.
// Exits 0 when everything holds, 1 with "FAILED" and a message on stderr otherwise.
//
// The issuer is plain http on the loopback interface, so openid-client's HTTPS-only rule is
// lifted with allowInsecureRequests; nothing else is relaxed.

import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import * as jose from 'jose';
import { logIn } from './login_form.mjs';
import { CheckFailed, check } from './check.mjs';

const SCOPE = 'openid profile read offline_access';
const RESOURCES = ['urn:invoices', 'urn:products'];
const NEVER_GRANTED = 'urn:payments';
const AT_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'client_id', 'scope'];

function options() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'client-id': { type: 'string', default: 'web' },
      'client-secret': { type: 'string', default: 'secret' },
      'redirect-uri': { type: 'string', default: 'http://127.0.0.1:5002/callback' },
      username: { type: 'string', default: 'alice' },
      password: { type: 'string', default: 'alice' },
    },
    strict: true,
  });
  if (!values.issuer) throw new CheckFailed('usage: openid_client_code.mjs --issuer URL [--client-id ID] [--client-secret SECRET] [--redirect-uri URL] [--username U] [--password P]');
  return values;
}

// What the token endpoint was sent, as seen on the wire.
function tokenRequest(init) {
  const body = new URLSearchParams(init?.body instanceof URLSearchParams ? init.body : String(init?.body ?? ''));
  return {
    grant_type: body.get('grant_type'),
    resource: body.getAll('resource'),
    code_verifier: body.has('code_verifier'),
  };
}

// OIDC Core §3.1.3.6: base64url of the left half of the hash of the access token.
function atHash(accessToken, alg) {
  const bits = { 256: 'sha256', 384: 'sha384', 512: 'sha512' }[alg.slice(-3)];
  check(bits, `id_token alg ${alg}: no at_hash hash known`);
  const digest = createHash(bits).update(accessToken, 'ascii').digest();
  return digest.subarray(0, digest.length / 2).toString('base64url');
}

// Verifies `token` as an RFC 9068 access token for `resource` alone and returns its payload.
async function verifyAccessToken(token, jwks, issuer, resource, what) {
  const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
    typ: 'at+jwt',
    issuer,
    audience: resource,
    requiredClaims: AT_CLAIMS,
  });
  check(typeof protectedHeader.kid === 'string', `${what}: the access token header has no kid`);
  check(payload.aud === resource, `${what}: aud is ${JSON.stringify(payload.aud)}, expected exactly the string ${JSON.stringify(resource)}`);
  const scopes = payload.scope.split(' ');
  check(scopes.includes('read'), `${what}: scope ${JSON.stringify(payload.scope)} lacks read`);
  check(!scopes.includes('openid') && !scopes.includes('profile'),
    `${what}: scope ${JSON.stringify(payload.scope)} carries identity scopes (SPEC §3 rule 5)`);
  return { payload, protectedHeader };
}

async function run(opts) {
  const issuer = new URL(opts.issuer);
  const sent = [];
  const recordingFetch = (url, init) => {
    if (new URL(url).pathname.endsWith('/connect/token')) sent.push(tokenRequest(init));
    return fetch(url, init);
  };
  const config = await client.discovery(issuer, opts['client-id'], undefined,
    client.ClientSecretBasic(opts['client-secret']), {
      execute: [client.allowInsecureRequests],
      [client.customFetch]: recordingFetch,
      timeout: 10,
    });
  const metadata = config.serverMetadata();
  check(metadata.issuer === opts.issuer, `discovery: issuer is ${JSON.stringify(metadata.issuer)}`);
  check(metadata.code_challenge_methods_supported?.includes('S256'), 'discovery: code_challenge_methods_supported lacks S256');
  check(metadata.authorization_response_iss_parameter_supported === true,
    'discovery: authorization_response_iss_parameter_supported is not true, so openid-client would not check iss');
  for (const grant of ['authorization_code', 'refresh_token']) {
    check(metadata.grant_types_supported?.includes(grant), `discovery: grant_types_supported lacks ${grant}`);
  }
  const jwks = jose.createRemoteJWKSet(new URL(metadata.jwks_uri));
  console.log(`ok discovery: ${metadata.authorization_endpoint}`);

  // 1. The authorization request, built by openid-client.
  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const parameters = new URLSearchParams({
    redirect_uri: opts['redirect-uri'],
    scope: SCOPE,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  for (const resource of RESOURCES) parameters.append('resource', resource);
  const authorizeUrl = client.buildAuthorizationUrl(config, parameters);
  check(authorizeUrl.searchParams.getAll('resource').join(' ') === RESOURCES.join(' '),
    `the authorization URL carries resource ${JSON.stringify(authorizeUrl.searchParams.getAll('resource'))}`);

  // 2. The login page, over HTTP.
  const callback = await logIn(authorizeUrl, opts.username, opts.password, { log: (line) => console.log(`ok ${line}`) });
  check(`${callback.origin}${callback.pathname}` === opts['redirect-uri'],
    `the login redirected to ${callback.origin}${callback.pathname}, expected ${opts['redirect-uri']}`);
  check(callback.searchParams.has('code'), `the redirect has no code: ${[...callback.searchParams.keys()].join(', ')}${callback.searchParams.has('error') ? ` (error=${callback.searchParams.get('error')}: ${callback.searchParams.get('error_description')})` : ''}`);
  console.log(`ok login: 303 to ${opts['redirect-uri']} with ${[...callback.searchParams.keys()].join(', ')}`);

  // 3. The code, redeemed for urn:invoices.
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  }, { resource: 'urn:invoices' });
  const [redeem] = sent.slice(-1);
  check(redeem.grant_type === 'authorization_code' && redeem.code_verifier && redeem.resource.join(' ') === 'urn:invoices',
    `authorization_code: openid-client sent ${JSON.stringify(redeem)}`);
  check(tokens.token_type === 'bearer', `authorization_code: token_type is ${JSON.stringify(tokens.token_type)}`);
  check(typeof tokens.refresh_token === 'string', 'authorization_code: no refresh_token although offline_access was granted');
  const invoices = await verifyAccessToken(tokens.access_token, jwks, metadata.issuer, 'urn:invoices', 'authorization_code');
  const claims = tokens.claims();
  check(claims, 'authorization_code: no id_token');
  check(claims.sub === invoices.payload.sub, `id_token sub ${claims.sub} differs from the access token's ${invoices.payload.sub}`);
  check(claims.aud === opts['client-id'] || (Array.isArray(claims.aud) && claims.aud.includes(opts['client-id'])), `id_token aud is ${JSON.stringify(claims.aud)}`);
  check(claims.nonce === nonce, 'id_token nonce differs');
  check(claims.name === 'Alice Smith' && claims.email === 'alice@example.com' || opts.username !== 'alice',
    `id_token lacks the profile claims: name=${JSON.stringify(claims.name)} email=${JSON.stringify(claims.email)}`);
  const idHeader = jose.decodeProtectedHeader(tokens.id_token);
  check(claims.at_hash === atHash(tokens.access_token, idHeader.alg), `id_token at_hash ${JSON.stringify(claims.at_hash)} does not match the access token`);
  console.log(`ok authorization_code: access token alg=${invoices.protectedHeader.alg} aud=${invoices.payload.aud} scope="${invoices.payload.scope}" sub=${invoices.payload.sub}`);
  console.log(`ok id_token: alg=${idHeader.alg} aud=${claims.aud} sub=${claims.sub} nonce, at_hash, name, email`);

  // 4. A refresh for the other resource.
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, { resource: 'urn:products' });
  check(sent.at(-1).grant_type === 'refresh_token' && sent.at(-1).resource.join(' ') === 'urn:products',
    `refresh_token: openid-client sent ${JSON.stringify(sent.at(-1))}`);
  const products = await verifyAccessToken(refreshed.access_token, jwks, metadata.issuer, 'urn:products', 'refresh_token');
  check(products.payload.sub === invoices.payload.sub, 'refresh_token: the access token is for another user');
  console.log(`ok refresh_token: aud=${products.payload.aud} scope="${products.payload.scope}"${refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token ? ' (refresh token rotated)' : ''}`);

  // 5. A refresh for a resource that was never granted.
  const current = refreshed.refresh_token ?? tokens.refresh_token;
  try {
    const wrong = await client.refreshTokenGrant(config, current, { resource: NEVER_GRANTED });
    throw new CheckFailed(`refresh_token with resource=${NEVER_GRANTED}: isogate issued a token (aud ${JSON.stringify(jose.decodeJwt(wrong.access_token).aud)}) instead of invalid_target`);
  } catch (error) {
    if (error instanceof CheckFailed) throw error;
    check(error instanceof client.ResponseBodyError && error.error === 'invalid_target',
      `refresh_token with resource=${NEVER_GRANTED}: expected invalid_target, got ${error?.error ?? `${error?.name}: ${error?.message}`}`);
    check(error.status === 400, `refresh_token with resource=${NEVER_GRANTED}: HTTP ${error.status}, expected 400`);
  }
  console.log(`ok refresh_token with resource=${NEVER_GRANTED}: invalid_target`);

  // The refused refresh used nothing up: the same refresh token still works.
  const again = await client.refreshTokenGrant(config, current, { resource: 'urn:invoices' });
  await verifyAccessToken(again.access_token, jwks, metadata.issuer, 'urn:invoices', 'refresh_token after a refused one');
  console.log('ok refresh_token after the refused one: aud=urn:invoices');
}

function describe(error) {
  const lines = [`${error?.name ?? 'Error'}: ${error?.message ?? error}`];
  if (error?.code) lines.push(`  code: ${error.code}`);
  if (error?.error) lines.push(`  error: ${error.error}${error.error_description ? ` (${error.error_description})` : ''}`);
  if (error?.status) lines.push(`  status: HTTP ${error.status}`);
  const response = error?.response ?? (error?.cause instanceof Response ? error.cause : undefined);
  if (response) lines.push(`  response: HTTP ${response.status} from ${response.url}`);
  if (error?.cause !== undefined && !(error.cause instanceof Response)) {
    const cause = error.cause;
    lines.push(`  cause: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : JSON.stringify(cause)}`);
  }
  return lines.join('\n');
}

try {
  await run(options());
  console.log('openid-client code flow interop: all checks passed');
} catch (error) {
  console.error(`openid-client code flow interop FAILED\n${describe(error)}`);
  process.exit(1);
}
