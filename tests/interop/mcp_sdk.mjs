// Interop check: the official MCP TypeScript SDK (@modelcontextprotocol/sdk) on both sides of
// isogate's gateway (SPEC §9–§10).
//
//   node tests/interop/mcp_sdk.mjs --mcp-url http://127.0.0.1:8080/mcp --upstream-port 9100 \
//     [--client-metadata-url https://app.example/client.json] [--username alice] [--password alice]
//
// 1. An MCP server written with the SDK (McpServer, stateless Streamable HTTP with JSON
//    answers) listens on 127.0.0.1:<upstream-port>, where isogate's route for --mcp-url
//    forwards. Its tools answer with what they saw: the token's aud and scope, isogate's
//    x-isogate-sub header.
// 2. The SDK's client with an OAuth provider connects to --mcp-url: from the 401 it finds the
//    route's RFC 9728 document, then isogate's authorization server metadata, registers itself
//    (RFC 7591, a public client with a loopback redirect URI) — or, with --client-metadata-url,
//    uses that URL as its client_id (a client ID metadata document the caller serves, which
//    isogate fetches) — and sends the user to the authorize URL; the login and consent forms are driven over HTTP (login_form.mjs) and the
//    code handed to transport.finishAuth, which redeems it with the resource indicator.
// 3. Connected again: tools/list and tools/call list_invoices with a token whose aud is the MCP
//    server's URL alone and whose scope is what the 401 asked for ("mcp").
// 4. tools/call delete_invoice needs more: the gateway's 403 insufficient_scope names the
//    scope, the SDK starts a new authorization for it (step-up), and after the login the same
//    call succeeds with a token holding that scope.
// Exits 0 when everything holds, 1 with "FAILED" and a message on stderr otherwise.

import http from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { z } from 'zod';
import { logIn } from './login_form.mjs';
import { CheckFailed, check } from './check.mjs';

const REDIRECT_URI = 'http://127.0.0.1/callback';

function options() {
  const { values } = parseArgs({
    options: {
      'mcp-url': { type: 'string' },
      'upstream-port': { type: 'string' },
      'client-metadata-url': { type: 'string' },
      username: { type: 'string', default: 'alice' },
      password: { type: 'string', default: 'alice' },
    },
    strict: true,
  });
  if (!values['mcp-url'] || !values['upstream-port']) {
    throw new CheckFailed('usage: mcp_sdk.mjs --mcp-url URL --upstream-port PORT [--username U] [--password P]');
  }
  return values;
}

// The claims of a JWT, unverified: the server reports what it was given (isogate verified it).
function claimsOf(authorization) {
  const token = (authorization ?? '').replace(/^Bearer /i, '');
  const payload = token.split('.')[1];
  return payload ? JSON.parse(Buffer.from(payload, 'base64url').toString()) : {};
}

// The MCP server behind the gateway: a new stateless server and transport per request.
function mcpServer(port) {
  const build = () => {
    const server = new McpServer({ name: 'invoices', version: '1.0.0' });
    const seen = (extra) => {
      const headers = extra.requestInfo?.headers ?? {};
      const claims = claimsOf(headers.authorization);
      return { aud: claims.aud, scope: claims.scope, sub: headers['x-isogate-sub'] };
    };
    server.registerTool('list_invoices', { description: 'Lists invoices' }, async (extra) => ({
      content: [{ type: 'text', text: JSON.stringify({ invoices: ['inv-1'], seen: seen(extra) }) }],
    }));
    server.registerTool(
      'delete_invoice',
      { description: 'Deletes an invoice', inputSchema: { id: z.string() } },
      async ({ id }, extra) => ({
        content: [{ type: 'text', text: JSON.stringify({ deleted: id, seen: seen(extra) }) }],
      }),
    );
    return server;
  };
  const listener = http.createServer(async (req, res) => {
    try {
      const server = build();
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      res.on('close', () => {
        transport.close();
        server.close();
      });
      await server.connect(transport);
      await transport.handleRequest(req, res);
    } catch (e) {
      if (!res.headersSent) res.writeHead(500).end(String(e));
    }
  });
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(Number(port), '127.0.0.1', () => resolve(listener));
  });
}

// The client's side of OAuth, kept in memory; the authorize URL the SDK would open in a
// browser is kept for the test to sign in at.
class Provider {
  clientMetadataUrl;
  information;
  stored;
  verifier;
  pending;
  registrations = 0;

  constructor(clientMetadataUrl) {
    this.clientMetadataUrl = clientMetadataUrl;
  }

  get redirectUrl() {
    return REDIRECT_URI;
  }

  get clientMetadata() {
    return {
      client_name: 'isogate MCP interop',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this.information;
  }

  saveClientInformation(information) {
    this.registrations += 1;
    this.information = information;
  }

  tokens() {
    return this.stored;
  }

  saveTokens(tokens) {
    this.stored = tokens;
  }

  redirectToAuthorization(url) {
    this.pending = url;
  }

  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }

  codeVerifier() {
    return this.verifier;
  }
}

// Signs in at the authorize URL the SDK asked for and returns the code from the redirect.
async function signIn(provider, opts, what) {
  check(provider.pending, `${what}: the SDK asked for no authorization`);
  const url = provider.pending;
  provider.pending = undefined;
  check(url.searchParams.get('code_challenge_method') === 'S256', `${what}: no PKCE S256 in ${url}`);
  const redirect = await logIn(url, opts.username, opts.password, { consent: true });
  check(`${redirect.origin}${redirect.pathname}` === REDIRECT_URI, `${what}: redirected to ${redirect}`);
  const code = redirect.searchParams.get('code');
  check(code, `${what}: no code in ${redirect} (${redirect.searchParams.get('error_description') ?? ''})`);
  return { code, scope: url.searchParams.get('scope'), resource: url.searchParams.get('resource') };
}

function resultOf(result, what) {
  check(!result.isError, `${what}: the tool failed: ${JSON.stringify(result)}`);
  return JSON.parse(result.content[0].text);
}

async function main() {
  const opts = options();
  const mcpUrl = new URL(opts['mcp-url']);
  const listener = await mcpServer(opts['upstream-port']);
  try {
    const documentUrl = opts['client-metadata-url'];
    const provider = new Provider(documentUrl);
    const connect = async () => {
      const client = new Client({ name: 'isogate-interop', version: '1.0.0' });
      const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
      await client.connect(transport);
      return { client, transport };
    };

    // 1. Nothing yet: the 401 leads to discovery, registration and an authorization.
    const first = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
    try {
      await new Client({ name: 'isogate-interop', version: '1.0.0' }).connect(first);
      throw new CheckFailed('connected without a token');
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
    }
    check(provider.registrations === 1, `saved client information ${provider.registrations} times, expected once`);
    const clientId = provider.information.client_id;
    if (documentUrl) {
      check(clientId === documentUrl, `client_id ${clientId}, expected the document's URL ${documentUrl}`);
    } else {
      check(clientId?.startsWith('reg_'), `client_id ${clientId}, expected one isogate registered`);
    }
    const login = await signIn(provider, opts, 'first authorization');
    check(login.resource === mcpUrl.href, `the SDK asked for resource ${login.resource}, expected ${mcpUrl.href}`);
    check(login.scope === 'mcp', `the SDK asked for scope ${login.scope}, expected what the 401 named ("mcp")`);
    await first.finishAuth(login.code);
    check(provider.stored?.access_token, 'no access token after finishAuth');

    // 2. Connected: list and call with a token for this MCP server alone.
    const { client, transport } = await connect();
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name).sort();
    check(JSON.stringify(names) === '["delete_invoice","list_invoices"]', `tools ${names}`);
    const listed = resultOf(await client.callTool({ name: 'list_invoices', arguments: {} }), 'list_invoices');
    const aud = [listed.seen.aud].flat();
    check(aud.length === 1 && aud[0] === mcpUrl.href, `the server saw aud ${JSON.stringify(listed.seen.aud)}, expected ${mcpUrl.href} alone`);
    check(listed.seen.scope === 'mcp', `the server saw scope ${listed.seen.scope}`);
    check(listed.seen.sub === '818727', `the server saw x-isogate-sub ${listed.seen.sub}`);

    // 3. A call that needs more: step-up through the 403 challenge.
    try {
      await client.callTool({ name: 'delete_invoice', arguments: { id: 'inv-1' } });
      throw new CheckFailed('delete_invoice passed with scope "mcp"');
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
    }
    const stepUp = await signIn(provider, opts, 'step-up authorization');
    check(stepUp.scope === 'invoices.delete', `the step-up asked for scope ${stepUp.scope}, expected invoices.delete`);
    check(stepUp.resource === mcpUrl.href, `the step-up asked for resource ${stepUp.resource}`);
    await transport.finishAuth(stepUp.code);
    const deleted = resultOf(
      await client.callTool({ name: 'delete_invoice', arguments: { id: 'inv-1' } }),
      'delete_invoice after step-up',
    );
    check(deleted.deleted === 'inv-1', `delete_invoice answered ${JSON.stringify(deleted)}`);
    check([deleted.seen.aud].flat().join(' ') === mcpUrl.href, `after step-up the server saw aud ${deleted.seen.aud}`);
    check(deleted.seen.scope.split(' ').includes('invoices.delete'), `after step-up the server saw scope ${deleted.seen.scope}`);
    check(provider.registrations === 1, 'the client registered again');
    await client.close();
    const how = documentUrl ? 'metadata document' : 'registered';
    console.log(`ok: ${how} ${clientId}, listed and called tools, stepped up to invoices.delete`);
  } finally {
    listener.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`FAILED: ${e instanceof CheckFailed ? e.message : e.stack ?? e}`);
    process.exit(1);
  },
);
