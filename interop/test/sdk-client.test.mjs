// The official TypeScript SDK client through toolgate, in front of
// server-everything over stdio: both ways of authenticating, listing and
// calling tools, and a deny and a revoke as the client sees them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { admin, agentKey, everythingEntry, narrowKey, startToolgate, stdioServerYAML } from './harness.mjs';

let tg;
before(async () => {
  tg = await startToolgate({ servers: stdioServerYAML('everything', everythingEntry, ['stdio']) });
});
after(async () => tg?.stop());

/** Connects the official client with the given transport options. */
async function connect(transportOpts) {
  const client = new Client({ name: 'interop-sdk-client', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(tg.mcpURL, transportOpts);
  await client.connect(transport);
  return { client, transport };
}

const withKey = (key) => ({ requestInit: { headers: { Authorization: `Bearer ${key}` } } });

const text = (res) => res.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');

test('a credential presented directly lists and calls tools', async () => {
  const { client } = await connect(withKey(agentKey));
  try {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    for (const want of ['everything__echo', 'everything__get-sum']) {
      assert.ok(names.includes(want), `listTools() = ${names}; want ${want} among them`);
    }
    const res = await client.callTool({ name: 'everything__echo', arguments: { message: 'hello from the SDK' } });
    assert.equal(text(res), 'Echo: hello from the SDK');
    assert.ok(!res.isError, `callTool(echo).isError = ${res.isError}; want false`);
  } finally {
    await client.close();
  }
});

test('the SDK ClientCredentialsProvider gets a session token by itself', async () => {
  const provider = new ClientCredentialsProvider({
    clientId: 'interop-agent',
    clientSecret: agentKey,
    expectedIssuer: tg.base,
  });
  const { client } = await connect({ authProvider: provider });
  try {
    const tokens = provider.tokens();
    assert.ok(tokens?.access_token, 'provider.tokens() has no access_token after connect');
    assert.notEqual(tokens.access_token, agentKey, 'the session token is the credential itself');
    assert.ok(tokens.expires_in > 0, `expires_in = ${tokens.expires_in}; want > 0`);
    const res = await client.callTool({ name: 'everything__get-sum', arguments: { a: 2, b: 40 } });
    assert.equal(text(res), 'The sum of 2 and 40 is 42.');
  } finally {
    await client.close();
  }
});

test('a wrong credential is refused with the OAuth challenge', async () => {
  const r = await fetch(tg.mcpURL, {
    method: 'POST',
    headers: { Authorization: 'Bearer not-a-key', 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  assert.equal(r.status, 401);
  const challenge = r.headers.get('www-authenticate') ?? '';
  assert.match(challenge, /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
  await assert.rejects(connect(withKey('not-a-key')), /unknown or expired|401/);
});

test('a call outside the session scope is denied as a tool error', async () => {
  const { client } = await connect(withKey(narrowKey));
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['everything__echo', 'everything__get-sum']);
    const res = await client.callTool({ name: 'everything__get-env', arguments: {} });
    assert.equal(res.isError, true, `callTool(get-env).isError = ${res.isError}; want true`);
    assert.match(text(res), /outside this session.s scope/);
    assert.doesNotMatch(text(res), /PATH=|"PATH"/, 'the denied tool ran');
    // The session goes on: an allowed call still works.
    const ok = await client.callTool({ name: 'everything__echo', arguments: { message: 'still here' } });
    assert.equal(text(ok), 'Echo: still here');
  } finally {
    await client.close();
  }
});

test('a revoked session fails the next request of a client holding the credential', async () => {
  const { client } = await connect(withKey(narrowKey));
  try {
    await client.callTool({ name: 'everything__echo', arguments: { message: 'before' } });
    const { sessions } = await admin(tg, 'GET', '/v1/sessions?agent=interop-narrow&state=active');
    assert.ok(sessions.length > 0, 'no active session of interop-narrow');
    for (const s of sessions) await admin(tg, 'POST', `/v1/sessions/${s.id}/revoke`, { reason: 'interop test' });
    await assert.rejects(client.callTool({ name: 'everything__echo', arguments: { message: 'after' } }), /revoked/);
  } finally {
    await client.close().catch(() => {});
  }
});

test('a locked and revoked agent cannot get a new session token', async () => {
  const provider = new ClientCredentialsProvider({ clientId: 'interop-agent', clientSecret: agentKey, expectedIssuer: tg.base });
  const { client } = await connect({ authProvider: provider });
  try {
    await client.callTool({ name: 'everything__echo', arguments: { message: 'before' } });
    await admin(tg, 'POST', '/v1/agents/interop-agent/lock');
    await admin(tg, 'POST', '/v1/agents/interop-agent/revoke', { reason: 'interop test' });
    // The provider sees the 401, asks the token endpoint again, and is refused.
    await assert.rejects(client.callTool({ name: 'everything__echo', arguments: { message: 'after' } }), /locked|unauthorized|invalid/i);
  } finally {
    await client.close().catch(() => {});
    await admin(tg, 'POST', '/v1/agents/interop-agent/unlock');
  }
});
