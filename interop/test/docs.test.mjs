// Runs the snippets of docs/clients.md against a real toolgate, so that the
// documentation cannot drift from what works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport, getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { agentKey, buildDir, repoDir, startToolgate, toolgateBin } from './harness.mjs';

const run = promisify(execFile);
const doc = readFileSync(join(repoDir, 'docs', 'clients.md'), 'utf8');

/** The fenced block that follows <!-- snippet: name --> in the doc. */
function snippet(name) {
  const m = new RegExp(`<!-- snippet: ${name} -->\\s*\`\`\`\\w*\\n([\\s\\S]*?)\\n\`\`\``).exec(doc);
  assert.ok(m, `docs/clients.md has no snippet ${name}`);
  return m[1];
}

let tg;
// The doc speaks of the quick start's gateway and demo agent; the test's
// gateway has the same names on another port with another key.
const adapt = (code) => code.replaceAll('http://127.0.0.1:8080', tg.base).replaceAll('demo-agent-key-change-me', agentKey);

before(async () => {
  tg = await startToolgate({
    agentName: 'demo-agent',
    servers: `    - name: demo
      transport: builtin
      builtin: demo
`,
    profiles: `  full:
    lifetime: 1h
    tools: ["demo__list_files", "demo__read_file"]
  narrow:
    lifetime: 1h
    tools: ["none"]`,
  });
});
after(async () => tg?.stop());

test('the desktop host JSON starts the stdio bridge, and tools work through it', async () => {
  const config = JSON.parse(adapt(snippet('host-json')));
  const server = config.mcpServers.toolgate;
  assert.equal(server.command, 'toolgate');
  // What a desktop host does with the entry: launch it and speak stdio.
  const client = new Client({ name: 'interop-desktop-host', version: '1.0.0' });
  await client.connect(new StdioClientTransport({
    command: toolgateBin,
    args: server.args,
    env: { ...getDefaultEnvironment(), ...server.env },
    stderr: 'pipe',
  }));
  try {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['demo__list_files', 'demo__read_file']);
    const res = await client.callTool({ name: 'demo__list_files', arguments: {} });
    assert.ok(!res.isError, `demo__list_files through the bridge: ${JSON.stringify(res)}`);
    const denied = await client.callTool({ name: 'demo__deploy', arguments: { service: 'x', version: '1', environment: 'prod' } });
    assert.equal(denied.isError, true, `demo__deploy through the bridge: ${JSON.stringify(denied)}; want a refusal`);
  } finally {
    await client.close();
  }
});

test('the TypeScript SDK snippet runs as written', async () => {
  mkdirSync(buildDir, { recursive: true });
  const file = join(buildDir, 'docs-snippet.mjs'); // inside interop/, so node_modules resolves
  writeFileSync(file, adapt(snippet('typescript')));
  const { stdout } = await run(process.execPath, [file], { env: { ...process.env, TOOLGATE_AGENT_KEY: agentKey }, timeout: 30_000 });
  assert.match(stdout, /^demo__list_files$/m);
  assert.match(stdout, /^ok /m);
});

test('the mcp-go snippet runs as written', async () => {
  const dir = join(buildDir, 'docs-snippet-go'); // inside the module, so go.mod resolves mcp-go
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.go'), adapt(snippet('go')));
  const { stdout } = await run('go', ['run', `./interop/.build/docs-snippet-go`], {
    cwd: repoDir,
    env: { ...process.env, TOOLGATE_AGENT_KEY: agentKey },
    timeout: 300_000,
  });
  assert.match(stdout, /^demo__list_files$/m);
  assert.match(stdout, /^isError: false$/m);
});
