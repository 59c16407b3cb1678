// Interop check: openid-client v6's DPoP handle against a running isogate (SPEC §8).
//
//   node tests/interop/openid_client_dpop.mjs --issuer http://127.0.0.1:5000 \
//     --gateway http://127.0.0.1:8080 [--client-id client] [--client-secret secret] \
//     [--resource urn:invoices] [--path /invoices/42]
//
// Gets a DPoP-bound token with the client_credentials grant and a fresh ES256 key, checks with
// jose that its cnf.jkt is the key's RFC 7638 thumbprint, calls the API through isogate's
// gateway with the token and openid-client's proofs (expects 200), then sends the same token
// as a plain Bearer token (expects 401 with a DPoP challenge). Exits 0 when everything holds,
// 1 with a message on stderr otherwise.
//
// Plain http on the loopback interface: allowInsecureRequests; nothing else is relaxed.

import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import * as jose from 'jose';
import { CheckFailed, check } from './check.mjs';

function options() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      gateway: { type: 'string' },
      'client-id': { type: 'string', default: 'client' },
      'client-secret': { type: 'string', default: 'secret' },
      resource: { type: 'string', default: 'urn:invoices' },
      path: { type: 'string', default: '/invoices/42' },
    },
    strict: true,
  });
  if (!values.issuer || !values.gateway) {
    throw new CheckFailed('usage: openid_client_dpop.mjs --issuer URL --gateway URL [--client-id ID] [--client-secret SECRET] [--resource URI] [--path PATH]');
  }
  return values;
}

// What openid-client sent to `path`: the Authorization scheme and whether a DPoP proof came.
function seen(init) {
  const headers = new Headers(init?.headers);
  return {
    scheme: (headers.get('authorization') ?? '').split(' ')[0],
    proof: headers.has('dpop'),
  };
}

async function run(opts) {
  const sent = [];
  const recordingFetch = (url, init) => {
    sent.push({ url: String(url), ...seen(init) });
    return fetch(url, init);
  };
  const config = await client.discovery(
    new URL(opts.issuer),
    opts['client-id'],
    undefined,
    client.ClientSecretBasic(opts['client-secret']),
    { algorithm: 'oauth2', execute: [client.allowInsecureRequests], [client.customFetch]: recordingFetch, timeout: 10 },
  );
  const metadata = config.serverMetadata();
  check(metadata.dpop_signing_alg_values_supported?.includes('ES256'),
    `discovery: dpop_signing_alg_values_supported is ${JSON.stringify(metadata.dpop_signing_alg_values_supported)}`);

  const keyPair = await client.randomDPoPKeyPair('ES256');
  const DPoP = client.getDPoPHandle(config, keyPair);
  const tokens = await client.clientCredentialsGrant(config, { scope: 'read', resource: opts.resource }, { DPoP });
  check(tokens.token_type === 'dpop', `token_type is ${JSON.stringify(tokens.token_type)}, expected dpop`);
  const tokenRequest = sent.find((r) => r.url.endsWith('/connect/token'));
  check(tokenRequest?.proof, 'openid-client sent no DPoP proof to the token endpoint');

  const jwks = jose.createRemoteJWKSet(new URL(metadata.jwks_uri));
  const { payload } = await jose.jwtVerify(tokens.access_token, jwks, {
    typ: 'at+jwt',
    issuer: metadata.issuer,
    audience: opts.resource,
  });
  const thumbprint = await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey), 'sha256');
  check(payload.cnf?.jkt === thumbprint, `cnf.jkt is ${JSON.stringify(payload.cnf)}, expected the key's thumbprint ${thumbprint}`);

  const url = new URL(opts.path, opts.gateway);
  const response = await client.fetchProtectedResource(config, tokens.access_token, url, 'GET', undefined, undefined, { DPoP });
  const body = await response.text();
  check(response.status === 200, `the gateway answered ${response.status} with a DPoP proof: ${body}`);
  const call = sent.find((r) => r.url === url.href);
  check(call?.scheme === 'DPoP' && call.proof, `the API call went out as ${JSON.stringify(call)}`);

  // The same token without its proof, as a plain bearer token: refused.
  let status;
  let challenge = '';
  try {
    const bare = await client.fetchProtectedResource(config, tokens.access_token, url, 'GET');
    status = bare.status;
    challenge = bare.headers.get('www-authenticate') ?? '';
  } catch (error) {
    const refused = error?.response ?? (error?.cause instanceof Response ? error.cause : undefined);
    if (!refused) throw error;
    status = refused.status;
    challenge = refused.headers.get('www-authenticate') ?? '';
  }
  check(status === 401, `the bound token as Bearer got ${status}, expected 401`);
  check(/\bDPoP\b/.test(challenge), `no DPoP challenge in ${JSON.stringify(challenge)}`);

  console.log(`ok dpop: token_type=${tokens.token_type} jkt=${payload.cnf.jkt} api=${response.status} bearer=${status}`);
}

function describe(error) {
  const lines = [`${error?.name ?? 'Error'}: ${error?.message ?? error}`];
  if (error?.code) lines.push(`  code: ${error.code}`);
  if (error?.error) lines.push(`  error: ${error.error}${error.error_description ? ` (${error.error_description})` : ''}`);
  const response = error?.response ?? (error?.cause instanceof Response ? error.cause : undefined);
  if (response) lines.push(`  response: HTTP ${response.status} from ${response.url}`);
  return lines.join('\n');
}

try {
  await run(options());
  console.log('openid-client DPoP interop: all checks passed');
} catch (error) {
  console.error(`openid-client DPoP interop FAILED\n${describe(error)}`);
  process.exit(1);
}
