// server-filesystem, a real stdio upstream, through toolgate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { agentKey, filesystemEntry, startToolgate, stdioServerYAML, tempDirWith } from './harness.mjs';

let tg;
let client;
let root;
before(async () => {
  root = realpathSync(tempDirWith({ 'notes.txt': 'toolgate was here\n', 'plan.md': '# plan\n' }));
  tg = await startToolgate({
    servers: stdioServerYAML('files', filesystemEntry, [root]),
    profiles: `  full:
    lifetime: 1h
    tools: ["files__read_text_file", "files__list_directory", "files__list_allowed_directories"]
  narrow:
    lifetime: 1h
    tools: ["none"]`,
  });
  client = new Client({ name: 'interop-sdk-client', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(tg.mcpURL, { requestInit: { headers: { Authorization: `Bearer ${agentKey}` } } }));
});
after(async () => {
  await client?.close();
  await tg?.stop();
});

const text = (res) => res.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');

test('only the tools in scope are listed', async () => {
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), ['files__list_allowed_directories', 'files__list_directory', 'files__read_text_file']);
});

test('reads and lists files', async () => {
  const read = await client.callTool({ name: 'files__read_text_file', arguments: { path: join(root, 'notes.txt') } });
  assert.equal(text(read).trim(), 'toolgate was here');
  const list = await client.callTool({ name: 'files__list_directory', arguments: { path: root } });
  assert.match(text(list), /\[FILE\] notes\.txt/);
  assert.match(text(list), /\[FILE\] plan\.md/);
});

test('a write outside the scope is refused and does not happen', async () => {
  const res = await client.callTool({ name: 'files__write_file', arguments: { path: join(root, 'evil.txt'), content: 'x' } });
  assert.equal(res.isError, true);
  const list = await client.callTool({ name: 'files__list_directory', arguments: { path: root } });
  assert.doesNotMatch(text(list), /evil\.txt/);
});

test('the server refuses paths outside its root, and the agent sees its answer', async () => {
  const res = await client.callTool({ name: 'files__read_text_file', arguments: { path: '/etc/hostname' } });
  assert.equal(res.isError, true);
  assert.match(text(res), /denied|outside|not allowed/i);
});
