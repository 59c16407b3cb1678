// Interop check: a real browser signs in on isogate's login page.
//
//   node tests/interop/browser_login.mjs --issuer http://127.0.0.1:5000 \
//     --redirect-uri http://127.0.0.1:PORT/callback \
//     [--client-id web] [--client-secret secret] [--username alice] [--password alice] \
//     [--chromium /usr/bin/chromium] [--screenshot FILE.png] [--then-at http://127.0.0.1:5001]
//
// playwright-core drives Debian's headless Chromium (never a browser of Playwright's own):
// 1. openid-client builds the authorization URL (PKCE S256, state, nonce, scope
//    "openid profile read offline_access", resources urn:invoices and urn:products);
// 2. the browser opens it, the login page is photographed (the path is printed), the
//    Username and Password fields are found by their labels and filled, "Sign in" is clicked;
// 3. the browser must land on the redirect URI with code, state and iss in the query (a
//    listener must answer there: the Rust test runs one), and the page there must load;
// 4. openid-client redeems the code with resource=urn:invoices and jose verifies the token;
// 5. with --then-at (another instance of a fleet on one store), the same browser opens a new
//    authorization URL at that origin: it must land on the redirect URI with a code at once,
//    without a login page (the session is the store's), and that code must redeem too.
// Exits 0 when everything holds, 1 with "FAILED" and a message on stderr otherwise.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';
import * as jose from 'jose';
import { chromium } from 'playwright-core';
import { CheckFailed, check } from './check.mjs';

const SCOPE = 'openid profile read offline_access';
const RESOURCES = ['urn:invoices', 'urn:products'];
const STEP_TIMEOUT_MS = 15_000;
// As root, on a machine whose only network is the loopback interface: no sandbox (it needs
// user namespaces), no GPU, and none of Chromium's own calls home.
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function options() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'redirect-uri': { type: 'string' },
      'client-id': { type: 'string', default: 'web' },
      'client-secret': { type: 'string', default: 'secret' },
      username: { type: 'string', default: 'alice' },
      password: { type: 'string', default: 'alice' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
      screenshot: { type: 'string' },
      'then-at': { type: 'string' },
    },
    strict: true,
  });
  if (!values.issuer || !values['redirect-uri']) {
    throw new CheckFailed('usage: browser_login.mjs --issuer URL --redirect-uri URL [--client-id ID] [--client-secret S] [--username U] [--password P] [--chromium PATH] [--screenshot FILE] [--then-at ORIGIN]');
  }
  return values;
}

async function signIn(context, opts, authorizeUrl, screenshot) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const opened = await page.goto(authorizeUrl.href);
  check(opened?.status() === 200, `the authorize URL answered HTTP ${opened?.status()}, expected the login page`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`ok login page shown (title "${await page.title()}"); screenshot: ${screenshot}`);

  await page.getByLabel('Username').fill(opts.username);
  await page.getByLabel('Password').fill(opts.password);
  const redirectUri = opts['redirect-uri'];
  const landed = page.waitForURL((url) => url.href.startsWith(`${redirectUri}?`), { waitUntil: 'load' })
    .then(() => 'landed', (error) => {
      throw new CheckFailed(`the browser did not land on ${redirectUri}?… within ${STEP_TIMEOUT_MS} ms; it is at ${page.url()} (${error.message.split('\n')[0]})`);
    });
  // A refused login shows the page again with an alert; fail at once instead of timing out.
  const refused = page.getByRole('alert').waitFor().then(() => 'refused');
  // The loser of the race below is abandoned; closing the browser rejects it later.
  landed.catch(() => {});
  refused.catch(() => {});
  await page.getByRole('button', { name: 'Sign in' }).click();
  const outcome = await Promise.race([landed, refused]);
  if (outcome === 'refused') {
    throw new CheckFailed(`the browser stayed on the login page: ${(await page.getByRole('alert').innerText()).trim()}`);
  }
  const callback = new URL(page.url());
  const shown = (await page.locator('body').innerText()).trim();
  await page.close();
  return { callback, shown };
}

// A new authorization request (PKCE S256, state, nonce) for both resources.
async function authorization(config, opts) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const parameters = new URLSearchParams({
    redirect_uri: opts['redirect-uri'],
    scope: SCOPE,
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  for (const resource of RESOURCES) parameters.append('resource', resource);
  return { verifier, state, nonce, url: client.buildAuthorizationUrl(config, parameters) };
}

// Checks the redirect the browser landed on, redeems its code for urn:invoices and verifies
// the access token; returns the token's claims.
async function redeem(config, request, callback) {
  const metadata = config.serverMetadata();
  const query = callback.searchParams;
  check(query.get('state') === request.state, `the redirect's state is ${JSON.stringify(query.get('state'))}, expected the one sent`);
  check(query.get('iss') === metadata.issuer, `the redirect's iss is ${JSON.stringify(query.get('iss'))}, expected ${metadata.issuer}`);
  check(query.get('code'), `the redirect has no code: ${[...query.keys()].join(', ')}`);
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: request.verifier,
    expectedState: request.state,
    expectedNonce: request.nonce,
    idTokenExpected: true,
  }, { resource: 'urn:invoices' });
  const { payload } = await jose.jwtVerify(tokens.access_token, jose.createRemoteJWKSet(new URL(metadata.jwks_uri)), {
    typ: 'at+jwt',
    issuer: metadata.issuer,
    audience: 'urn:invoices',
  });
  check(payload.aud === 'urn:invoices', `aud is ${JSON.stringify(payload.aud)}, expected urn:invoices alone`);
  check(tokens.claims()?.sub === payload.sub, 'the ID token and the access token name different users');
  return payload;
}

// With the browser signed in: opens `url` and must land on the redirect URI at once.
async function authorizeSignedIn(context, opts, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const redirectUri = opts['redirect-uri'];
  await page.goto(url.href, { waitUntil: 'load' });
  if (!page.url().startsWith(`${redirectUri}?`)) {
    const heading = await page.getByRole('heading').first().innerText().catch(() => '(no heading)');
    throw new CheckFailed(`at ${url.origin} the signed-in browser did not land on ${redirectUri}?…: it is at ${page.url()}, showing "${heading.trim()}"`);
  }
  const callback = new URL(page.url());
  await page.close();
  return callback;
}

async function run(opts) {
  const config = await client.discovery(new URL(opts.issuer), opts['client-id'], undefined,
    client.ClientSecretBasic(opts['client-secret']), {
      execute: [client.allowInsecureRequests],
      timeout: 10,
    });
  const first = await authorization(config, opts);
  let second;
  if (opts['then-at']) {
    second = await authorization(config, opts);
    const origin = new URL(opts['then-at']);
    second.url.protocol = origin.protocol;
    second.url.host = origin.host;
  }

  const screenshot = opts.screenshot ?? join(mkdtempSync(join(tmpdir(), 'isogate-browser-')), 'login.png');
  const profile = mkdtempSync(join(tmpdir(), 'isogate-chromium-'));
  let context;
  let signedIn;
  let secondCallback;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 30_000,
    });
    console.log(`ok Chromium ${context.browser()?.version() ?? ''} started (${opts.chromium})`.replace(' ()', ''));
    signedIn = await signIn(context, opts, first.url, screenshot);
    if (second) secondCallback = await authorizeSignedIn(context, opts, second.url);
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  }

  const { callback, shown } = signedIn;
  console.log(`ok the browser landed on ${opts['redirect-uri']} with ${[...callback.searchParams.keys()].join(', ')}; the page there says "${shown}"`);
  const payload = await redeem(config, first, callback);
  console.log(`ok the code redeemed: access token aud=${payload.aud} sub=${payload.sub} scope="${payload.scope}", id_token nonce checked`);
  if (second) {
    console.log(`ok at ${second.url.origin} the signed-in browser got a code at once, no login page`);
    const again = await redeem(config, second, secondCallback);
    check(again.sub === payload.sub, `the second code is for sub=${again.sub}, the first for sub=${payload.sub}`);
    console.log(`ok the code from ${second.url.origin} redeemed: access token aud=${again.aud} sub=${again.sub}`);
  }
}

function describe(error) {
  const lines = [`${error?.name ?? 'Error'}: ${error?.message ?? error}`];
  if (error?.code) lines.push(`  code: ${error.code}`);
  if (error?.error) lines.push(`  error: ${error.error}${error.error_description ? ` (${error.error_description})` : ''}`);
  if (error?.status) lines.push(`  status: HTTP ${error.status}`);
  return lines.join('\n');
}

try {
  await run(options());
  console.log('browser interop: all checks passed');
} catch (error) {
  console.error(`browser interop FAILED\n${describe(error)}`);
  process.exit(1);
}
