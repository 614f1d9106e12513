// A loopback OpenID Connect provider for the console's browser tests. Never for production.
//
//   node devtools/oidc/server.js --port 0 --client-id console --client-secret s3cret \
//     --redirect-uri http://127.0.0.1:8000/auth/complete/oidc/
//
// Each option can also come from the environment: OIDC_PORT, OIDC_HOST, OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (comma-separated). Port 0 picks a free port. Once it
// listens, it prints one line "OIDC provider ready: <issuer>" on stdout; the issuer is the value
// for SOCIAL_AUTH_OIDC_ENDPOINT.
//
// Sign-in uses oidc-provider's devInteractions: any login name and any password are accepted.
// The login name is the subject; its e-mail is the login itself when it contains "@", else
// "<login>@oidc.test", and it is always reported as verified.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: process.env.OIDC_HOST || '127.0.0.1' },
    port: { type: 'string', default: process.env.OIDC_PORT || '0' },
    'client-id': { type: 'string', default: process.env.OIDC_CLIENT_ID || 'infrai-console' },
    'client-secret': { type: 'string', default: process.env.OIDC_CLIENT_SECRET || 'infrai-console-secret' },
    'redirect-uri': {
      type: 'string',
      multiple: true,
      default: (process.env.OIDC_REDIRECT_URIS || 'http://127.0.0.1:8000/auth/complete/oidc/')
        .split(',')
        .map((uri) => uri.trim())
        .filter(Boolean),
    },
  },
});

function emailFor(login) {
  return login.includes('@') ? login.toLowerCase() : `${login.toLowerCase()}@oidc.test`;
}

async function findAccount(_ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        email: emailFor(sub),
        email_verified: true,
        name: sub,
        preferred_username: sub,
      };
    },
  };
}

const server = createServer();
server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  const issuer = `http://${args.host}:${port}`;
  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: args['client-id'],
        client_secret: args['client-secret'],
        redirect_uris: args['redirect-uri'],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [{ ...signingKey, use: 'sig', alg: 'RS256', kid: 'browser-tests' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    findAccount,
    features: { devInteractions: { enabled: true } },
  });

  server.on('request', provider.callback());
  console.log(`OIDC provider ready: ${issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
