// oidc-provider set up as the counterpart of isogate's token endpoint in benches/load/run:
// client_credentials for client "client" (secret "secret", client_secret_basic), the
// resourceIndicators feature with `urn:invoices` as a resource server whose access tokens are
// ES256-signed JWTs, signed with the same P-256 key file isogate uses.
//
//   node server.mjs <port> <es256 PKCS#8 PEM file>
//
// Prints `listening <port>` once it accepts connections.
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const [port, keyFile] = process.argv.slice(2);
if (!port || !keyFile) {
  console.error('usage: node server.mjs <port> <es256 key PEM>');
  process.exit(2);
}

const es256 = {
  ...createPrivateKey(readFileSync(keyFile)).export({ format: 'jwk' }),
  kid: 'es256',
  alg: 'ES256',
  use: 'sig',
};
// oidc-provider signs ID tokens with RS256 by default and wants a key for it at start-up;
// access tokens for urn:invoices are signed with the ES256 key above.
const rs256 = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: 'rs256',
  alg: 'RS256',
  use: 'sig',
};

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  jwks: { keys: [rs256, es256] },
  clients: [
    {
      client_id: 'client',
      client_secret: 'secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'read write',
    },
  ],
  scopes: ['read', 'write'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:invoices',
      getResourceServerInfo: (_ctx, resourceIndicator) => {
        if (resourceIndicator !== 'urn:invoices') {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: 'read write',
          audience: 'urn:invoices',
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});

createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${port}`);
});
