// A real OpenID provider (panva's oidc-provider) for swsrs's auth tests.
//
//   node server.mjs --keys FILE [--port N] [--access-ttl S] [--device-ttl S]
//                   [--interval S] [--slow-down]
//
// Listens on 127.0.0.1 only, on --port or (default) a port the system picks; the
// first line on stdout is "idp listening on http://127.0.0.1:PORT". Access tokens are JWTs (RS256) with aud "swsrs".
// The signing keys come from FILE (a private JWKS the tests write), so a
// test can also forge tokens with the IdP's own key. Clients:
//   swsrs-ci   confidential, client_credentials (mint tokens with chosen scopes)
//   swsrs-cli  public, device_code + refresh_token
// Test-only routes, all under /__test/:
//   POST /__test/reload  re-read the keys file (key rotation); the provider is rebuilt
//   GET  /__test/stats   {"jwks": JWKS fetches, "discovery": discovery fetches,
//                         "device_polls": times (s) of device-code token requests}
// Hooks: --interval adds "interval" to device authorization answers (the
// provider sends none, which means 5 s); --slow-down turns the first
// authorization_pending answer into slow_down (the provider never sends it).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    keys: { type: 'string' },
    'access-ttl': { type: 'string', default: '300' },
    'device-ttl': { type: 'string', default: '600' },
    interval: { type: 'string', default: '' },
    'slow-down': { type: 'boolean', default: false },
  },
});

let issuer; // known once the socket is bound
const RESOURCE = 'urn:swsrs:admin';
const AUDIENCE = 'swsrs';
const SWSRS_SCOPES = 'swsrs:session:create swsrs:session:read swsrs:session:delete';
const accessTTL = Number(opt['access-ttl']);
const stats = { jwks: 0, discovery: 0, device_polls: [] };
let slowDownPending = opt['slow-down'];

function build() {
  const jwks = JSON.parse(readFileSync(opt.keys, 'utf8'));
  const provider = new Provider(issuer, {
    jwks,
    clients: [
      {
        client_id: 'swsrs-ci',
        client_secret: 'swsrs-ci-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
      {
        client_id: 'swsrs-cli',
        client_name: 'swsrs CLI',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'none',
      },
    ],
    scopes: ['openid', 'offline_access', ...SWSRS_SCOPES.split(' ')],
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub }),
    }),
    // The dev login is enough; consent is given for exactly what was asked.
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(`openid offline_access ${SWSRS_SCOPES}`);
      grant.addResourceScope(RESOURCE, SWSRS_SCOPES);
      await grant.save();
      return grant;
    },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: SWSRS_SCOPES,
          audience: AUDIENCE,
          accessTokenTTL: accessTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: {
      AccessToken: accessTTL,
      ClientCredentials: accessTTL,
      DeviceCode: Number(opt['device-ttl']),
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
      RefreshToken: 86400,
      IdToken: 300,
    },
    pkce: { required: () => false },
    // No https in tests; the provider would otherwise refuse cookies and URLs.
    cookies: { keys: ['swsrs-test-idp-cookie-key'] },
  });
  provider.proxy = false;

  provider.use(async (ctx, next) => {
    if (ctx.path === '/jwks') stats.jwks += 1;
    if (ctx.path === '/.well-known/openid-configuration') stats.discovery += 1;
    await next();
    if (ctx.path === '/token' && ctx.oidc?.params?.grant_type?.endsWith(':device_code')) {
      stats.device_polls.push(Date.now() / 1000);
    }
    if (ctx.path === '/device/auth' && ctx.status === 200 && opt.interval) {
      ctx.body = { ...ctx.body, interval: Number(opt.interval) };
    }
    if (
      ctx.path === '/token'
      && ctx.status === 400
      && slowDownPending
      && ctx.body?.error === 'authorization_pending'
    ) {
      slowDownPending = false;
      ctx.body = { error: 'slow_down', error_description: 'polling too fast' };
    }
  });
  return provider;
}

let handler;

const server = http.createServer((req, res) => {
  if (req.url === '/__test/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (req.url === '/__test/reload' && req.method === 'POST') {
    handler = build().callback();
    res.writeHead(204);
    res.end();
    return;
  }
  if (!handler) {
    res.writeHead(503);
    res.end();
    return;
  }
  handler(req, res);
});

server.listen(Number(opt.port), '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  handler = build().callback();
  process.stdout.write(`idp listening on ${issuer}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
