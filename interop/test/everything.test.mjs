// server-everything, the reference server of the MCP project, as an
// upstream of toolgate over stdio and over Streamable HTTP; the official
// TypeScript SDK client on the agent side.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { agentKey, everythingEntry, startEverythingHTTP, startToolgate, stdioServerYAML, waitFor } from './harness.mjs';

const text = (res) => res.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');

/** The tools server-everything lists to a client that connects to it directly. */
async function directToolNames(transport) {
  // The capabilities toolgate declares to its upstreams (tools/upstream.go).
  const client = new Client({ name: 'interop-direct', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {} } });
  await client.connect(transport);
  try {
    // Some tools are registered after initialization, by client capability.
    await new Promise((r) => setTimeout(r, 300));
    return (await client.listTools()).tools.map((t) => t.name).sort();
  } finally {
    await client.close();
  }
}

for (const mode of ['stdio', 'streamable-http']) {
  describe(`server-everything over ${mode}`, () => {
    let tg;
    let upstream;
    let client;
    let direct;
    before(async () => {
      let servers;
      if (mode === 'stdio') {
        servers = stdioServerYAML('everything', everythingEntry, ['stdio']);
        direct = await directToolNames(new StdioClientTransport({ command: process.execPath, args: [everythingEntry, 'stdio'], stderr: 'ignore' }));
      } else {
        upstream = await startEverythingHTTP();
        servers = `    - name: everything
      transport: streamable-http
      url: ${upstream.url}
      timeout: 30s
`;
        direct = await directToolNames(new StreamableHTTPClientTransport(new URL(upstream.url)));
      }
      tg = await startToolgate({ servers });
      client = new Client({ name: 'interop-sdk-client', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(tg.mcpURL, { requestInit: { headers: { Authorization: `Bearer ${agentKey}` } } }));
    });
    after(async () => {
      await client?.close();
      await tg?.stop();
      await upstream?.stop();
    });

    test('every tool it lists directly is listed through toolgate, namespaced', async () => {
      const want = direct.map((n) => `everything__${n}`).sort();
      assert.ok(want.length >= 10, `direct listing has ${want.length} tools: ${direct}`);
      let got;
      await waitFor('the catalog to match the direct listing', async () => {
        got = (await client.listTools()).tools.map((t) => t.name).sort();
        return JSON.stringify(got) === JSON.stringify(want);
      }, { timeoutMs: 10_000 }).catch(() => {});
      assert.deepEqual(got, want);
    });

    test('input schemas arrive as the upstream wrote them', async () => {
      const { tools } = await client.listTools();
      const sum = tools.find((t) => t.name === 'everything__get-sum');
      assert.ok(sum, 'get-sum not listed');
      assert.deepEqual(sum.inputSchema.required, ['a', 'b']);
      assert.equal(sum.inputSchema.properties.a.type, 'number');
      const structured = tools.find((t) => t.name === 'everything__get-structured-content');
      assert.ok(structured?.outputSchema, 'get-structured-content lost its outputSchema');
    });

    test('echo', async () => {
      const res = await client.callTool({ name: 'everything__echo', arguments: { message: 'ünïcødé ✓' } });
      assert.equal(text(res), 'Echo: ünïcødé ✓');
    });

    test('sum', async () => {
      const res = await client.callTool({ name: 'everything__get-sum', arguments: { a: 19.5, b: -7 } });
      assert.equal(text(res), 'The sum of 19.5 and -7 is 12.5.');
    });

    test('structured content', async () => {
      // The SDK client checks structuredContent against the listed outputSchema.
      const res = await client.callTool({ name: 'everything__get-structured-content', arguments: { location: 'Chicago' } });
      assert.deepEqual(res.structuredContent, { temperature: 36, conditions: 'Light rain / drizzle', humidity: 82 });
    });

    test('progress', async () => {
      const seen = [];
      const res = await client.callTool(
        { name: 'everything__trigger-long-running-operation', arguments: { duration: 0.5, steps: 5 } },
        undefined,
        { onprogress: (p) => seen.push(p) },
      );
      assert.match(text(res), /Long running operation completed/);
      // The last notification races the response: mcp-go's Streamable HTTP
      // server can drop it (shared/notes/mcp-go.md pitfall 7), so it is not
      // required; every earlier one is, in order.
      const got = seen.map((p) => p.progress);
      assert.deepEqual(got.slice(0, 4), [1, 2, 3, 4], `progress notifications: ${JSON.stringify(seen)}`);
      assert.ok(got.length <= 5 && (got.length === 4 || got[4] === 5), `progress notifications: ${JSON.stringify(seen)}`);
      assert.ok(seen.every((p) => p.total === 5), `totals: ${JSON.stringify(seen)}`);
    });

    test('an upstream tool error stays a tool error', async () => {
      const res = await client.callTool({ name: 'everything__get-sum', arguments: { a: 'x', b: 1 } });
      assert.equal(res.isError, true, `get-sum("x", 1).isError = ${res.isError}; want true`);
    });
  });
}
