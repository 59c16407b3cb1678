// Interop check: openid-client v6 and jose, both strict by default, against a running isogate.
//
//   node tests/interop/openid_client.mjs --issuer http://127.0.0.1:5000 \
//     [--client-id client] [--client-secret secret] [--scope read] [--resource urn:invoices] \
//     [--key-client-id signed --private-key key.pem --kid k1]
//
// For each of client_secret_basic and client_secret_post, and private_key_jwt (RFC 7523, with
// openid-client's own assertion signed by the ES256 key in --private-key) when it is given:
// discovers the issuer (OpenID Connect discovery for basic, RFC 8414 for the others), runs the
// client_credentials grant with one resource indicator, and verifies the access token against
// the discovered JWKS as an RFC 9068 token.
// Exits 0 when everything holds, 1 with a message on stderr otherwise.
//
// The issuer is plain http on the loopback interface, so openid-client's HTTPS-only rule is
// lifted with allowInsecureRequests; nothing else is relaxed.

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import * as jose from 'jose';
import { CheckFailed, check } from './check.mjs';

const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'client_id', 'scope'];

function options() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'client-id': { type: 'string', default: 'client' },
      'client-secret': { type: 'string', default: 'secret' },
      scope: { type: 'string', default: 'read' },
      resource: { type: 'string', default: 'urn:invoices' },
      'key-client-id': { type: 'string' },
      'private-key': { type: 'string' },
      kid: { type: 'string' },
    },
    strict: true,
  });
  if (!values.issuer) throw new CheckFailed('usage: openid_client.mjs --issuer URL [--client-id ID] [--client-secret SECRET] [--scope SCOPE] [--resource URI]');
  return values;
}

// How the token request authenticated the client, as seen on the wire.
function authUsed(init) {
  const headers = new Headers(init?.headers);
  const body = new URLSearchParams(init?.body instanceof URLSearchParams ? init.body : String(init?.body ?? ''));
  return {
    basic: /^basic /i.test(headers.get('authorization') ?? ''),
    post: body.has('client_secret'),
    assertion: body.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' && body.has('client_assertion'),
    resource: body.getAll('resource'),
  };
}

async function run(opts, method) {
  const issuer = new URL(opts.issuer);
  const tokenRequests = [];
  // Records what openid-client puts on the wire for the token endpoint; the request itself
  // goes out unchanged through the platform fetch.
  const recordingFetch = (url, init) => {
    if (new URL(url).pathname.endsWith('/connect/token')) tokenRequests.push(authUsed(init));
    return fetch(url, init);
  };
  let auth;
  let clientId = opts['client-id'];
  if (method === 'client_secret_basic') {
    auth = client.ClientSecretBasic(opts['client-secret']);
  } else if (method === 'client_secret_post') {
    auth = client.ClientSecretPost(opts['client-secret']);
  } else {
    const key = await jose.importPKCS8(await readFile(opts['private-key'], 'utf8'), 'ES256');
    auth = client.PrivateKeyJwt({ key, kid: opts.kid });
    clientId = opts['key-client-id'];
  }
  const algorithm = method === 'client_secret_basic' ? 'oidc' : 'oauth2';

  const config = await client.discovery(issuer, clientId, undefined, auth, {
    algorithm,
    execute: [client.allowInsecureRequests],
    [client.customFetch]: recordingFetch,
    timeout: 10,
  });
  const metadata = config.serverMetadata();
  check(metadata.issuer === opts.issuer, `discovery (${algorithm}): issuer is ${JSON.stringify(metadata.issuer)}, expected ${JSON.stringify(opts.issuer)}`);
  check(typeof metadata.jwks_uri === 'string', `discovery (${algorithm}): no jwks_uri`);
  check(metadata.token_endpoint_auth_methods_supported?.includes(method), `discovery (${algorithm}): token_endpoint_auth_methods_supported lacks ${method}`);
  check(metadata.grant_types_supported?.includes('client_credentials'), `discovery (${algorithm}): grant_types_supported lacks client_credentials`);

  const tokens = await client.clientCredentialsGrant(config, {
    scope: opts.scope,
    resource: opts.resource,
  });

  check(tokenRequests.length === 1, `${method}: expected one token request, saw ${tokenRequests.length}`);
  const [wire] = tokenRequests;
  check(wire.basic === (method === 'client_secret_basic') && wire.post === (method === 'client_secret_post')
    && wire.assertion === (method === 'private_key_jwt'),
    `${method}: the token request used ${JSON.stringify(wire)} instead`);
  check(wire.resource.length === 1 && wire.resource[0] === opts.resource, `${method}: resource sent was ${JSON.stringify(wire.resource)}`);

  check(typeof tokens.access_token === 'string', `${method}: no access_token in the token response`);
  check(tokens.token_type === 'bearer', `${method}: token_type is ${JSON.stringify(tokens.token_type)}, expected bearer`);
  check(Number.isInteger(tokens.expires_in) && tokens.expires_in > 0, `${method}: expires_in is ${JSON.stringify(tokens.expires_in)}`);
  check(tokens.scope === undefined || tokens.scope === opts.scope, `${method}: token response scope is ${JSON.stringify(tokens.scope)}, expected ${JSON.stringify(opts.scope)}`);

  const jwks = jose.createRemoteJWKSet(new URL(metadata.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(tokens.access_token, jwks, {
    typ: 'at+jwt',
    issuer: metadata.issuer,
    audience: opts.resource,
    requiredClaims: REQUIRED_CLAIMS,
  });

  check(typeof protectedHeader.kid === 'string', `${method}: the token header has no kid`);
  check(typeof payload.aud === 'string' && payload.aud === opts.resource,
    `${method}: aud is ${JSON.stringify(payload.aud)}, expected exactly the string ${JSON.stringify(opts.resource)}`);
  check(payload.scope === opts.scope, `${method}: scope claim is ${JSON.stringify(payload.scope)}, expected ${JSON.stringify(opts.scope)}`);
  check(payload.client_id === clientId, `${method}: client_id claim is ${JSON.stringify(payload.client_id)}`);
  check(payload.sub === clientId, `${method}: sub claim is ${JSON.stringify(payload.sub)} (client_credentials: the client)`);
  check(payload.exp - payload.iat === tokens.expires_in, `${method}: exp - iat (${payload.exp - payload.iat}) differs from expires_in (${tokens.expires_in})`);

  console.log(`ok ${method} (discovery ${algorithm}): alg=${protectedHeader.alg} kid=${protectedHeader.kid} aud=${payload.aud} scope=${payload.scope} expires_in=${tokens.expires_in}`);
}

function describe(error) {
  const lines = [`${error?.name ?? 'Error'}: ${error?.message ?? error}`];
  if (error?.code) lines.push(`  code: ${error.code}`);
  if (error?.error) lines.push(`  error: ${error.error}${error.error_description ? ` (${error.error_description})` : ''}`);
  const response = error?.response ?? (error?.cause instanceof Response ? error.cause : undefined);
  if (response) lines.push(`  response: HTTP ${response.status} from ${response.url}`);
  if (error?.cause !== undefined && !(error.cause instanceof Response)) {
    const cause = error.cause;
    lines.push(`  cause: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : JSON.stringify(cause)}`);
  }
  return lines.join('\n');
}

try {
  const opts = options();
  const methods = ['client_secret_basic', 'client_secret_post'];
  if (opts['private-key']) methods.push('private_key_jwt');
  for (const method of methods) {
    await run(opts, method);
  }
  console.log('openid-client interop: all checks passed');
} catch (error) {
  console.error(`openid-client interop FAILED\n${describe(error)}`);
  process.exit(1);
}
