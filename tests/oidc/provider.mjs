// A real OpenID provider (npm `oidc-provider` 8.8.1) for margo-proxy's auth
// integration tests. Test-only: fixed client secrets, in-memory storage,
// loopback only.
//
// Usage: node provider.mjs [--resource URL] [--port N] [--alg RS256|PS256|ES256|EdDSA] [--keep-running]
//   --resource  audience of the JWT access tokens (env MARGO_OIDC_RESOURCE),
//               default http://127.0.0.1:8080 (the proxy's public URL)
//   --port      default 0 (ephemeral)
//   --alg       signing algorithm of access tokens, default RS256
//   --keep-running  do not exit when stdin closes (manual use)
//
// Stdout, first line, one JSON object:
//   {"issuer", "token_endpoint", "jwks_uri", "introspection_endpoint",
//    "rotate_url", "resource", "opaque_resource", "clients": {id: secret}}
// Later lines: {"rotated": "<new kid>"} after each rotation.
//
// Key rotation while running: POST {issuer}/admin/rotate, or SIGUSR2. A new
// key is generated, published first in the JWKS, and signs every token
// issued afterwards; old keys stay published so tokens already issued keep
// verifying.
//
// Exits on SIGTERM/SIGINT and when stdin closes (so a test harness that
// dies never leaves it behind).
//
// The password grant does not exist in oidc-provider (OAuth 2.1 dropped it),
// so username/password from stock clients are exchanged by margo-proxy's
// token endpoint with the client_credentials grant: the `registry-user`
// client below plays the human user.

import http from 'node:http';
import crypto from 'node:crypto';

// Signal and stdin handlers first: loading oidc-provider takes a while on a
// busy machine, and a SIGTERM/SIGUSR2 arriving meanwhile must not take the
// default action (SIGUSR2 would kill the process).
let server;
let provider;
const stop = () => {
  if (server) server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('SIGUSR2', () => {
  if (provider) rotate();
});
if (!process.argv.includes('--keep-running')) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}

const { default: Provider } = await import('oidc-provider');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const resource = arg('--resource', process.env.MARGO_OIDC_RESOURCE || 'http://127.0.0.1:8080');
const port = Number(arg('--port', '0'));
const alg = arg('--alg', 'RS256');
const opaqueResource = 'urn:margo:opaque';

// client id -> [secret, groups]
const CLIENTS = {
  wfm: ['wfm-secret', ['wfm']],
  developer: ['developer-secret', ['developers', 'dev-acme']],
  'registry-user': ['registry-user-secret', ['dev-acme']],
  outsider: ['outsider-secret', []],
};

function newKey() {
  const kid = `k${Date.now().toString(36)}${crypto.randomBytes(3).toString('hex')}`;
  let pair;
  if (alg.startsWith('RS') || alg.startsWith('PS')) pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'EdDSA') pair = crypto.generateKeyPairSync('ed25519');
  else throw new Error(`unsupported --alg ${alg}`);
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [newKey()];
let issuer; // set once listening

function build() {
  const current = keys[0];
  const p = new Provider(issuer, {
    clients: Object.entries(CLIENTS).map(([client_id, [client_secret]]) => ({
      client_id,
      client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys },
    scopes: ['registry'],
    cookies: { keys: ['margo-test-only-cookie-key'] },
    ttl: { ClientCredentials: () => 300, AccessToken: () => 300 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          if (indicator === resource) {
            return {
              scope: 'registry',
              audience: resource,
              accessTokenTTL: 300,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg, kid: current.kid } },
            };
          }
          if (indicator === opaqueResource) {
            return { scope: 'registry', audience: resource, accessTokenTTL: 300, accessTokenFormat: 'opaque' };
          }
          throw new Provider.errors.InvalidTarget();
        },
      },
    },
    // Group memberships for margo-proxy's claim rules.
    extraTokenClaims: (ctx, token) => {
      const c = CLIENTS[token.clientId];
      return c ? { groups: c[1] } : undefined;
    },
  });
  p.proxy = false;
  return p;
}

function rotate() {
  keys.unshift(newKey());
  provider = build();
  process.stdout.write(`${JSON.stringify({ rotated: keys[0].kid })}\n`);
  return keys[0].kid;
}

server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/admin/rotate') {
    const kid = rotate();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kid }));
    return;
  }
  provider.callback()(req, res);
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build();
  const info = {
    issuer,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    introspection_endpoint: `${issuer}/token/introspection`,
    rotate_url: `${issuer}/admin/rotate`,
    resource,
    opaque_resource: opaqueResource,
    alg,
    clients: Object.fromEntries(Object.entries(CLIENTS).map(([id, [secret]]) => [id, secret])),
  };
  process.stdout.write(`${JSON.stringify(info)}\n`);
});
