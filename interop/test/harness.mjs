// Starts what the interop tests talk to: toolgate itself (the binary built
// by `npm run build`), real upstream MCP servers from npm, and the mcp-go
// conformance fixture. Every process started here is killed when the test
// file ends.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const interopDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const repoDir = resolve(interopDir, '..');
export const buildDir = join(interopDir, '.build');
export const toolgateBin = join(buildDir, 'toolgate');
export const fixtureBin = join(buildDir, 'conformance-fixture');
const pkg = (name) => join(interopDir, 'node_modules', '@modelcontextprotocol', name);
export const everythingEntry = join(pkg('server-everything'), 'dist', 'index.js');
export const filesystemEntry = join(pkg('server-filesystem'), 'dist', 'index.js');

// Agent keys of the test configs. They exist only in these tests.
export const agentKey = 'interop-agent-key-0123456789abcdef';
export const narrowKey = 'interop-narrow-key-0123456789abcdef';
export const adminToken = 'interop-admin-token-0123456789abcdef';

const children = new Set();
// Whatever a test left running ends with the test process.
process.on('exit', () => {
  for (const c of children) c.kill('SIGTERM');
});

/** A TCP port free on the loopback interface right now. */
export async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Starts a process; its output is kept for error messages. */
export function startProcess(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  let out = '';
  const keep = (b) => {
    out += b.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', () => children.delete(child));
  return {
    child,
    output: () => out,
    stop: () =>
      new Promise((res) => {
        if (child.exitCode !== null || child.signalCode !== null) return res();
        child.once('exit', () => res());
        child.kill('SIGTERM');
      }),
  };
}

/** Polls fn until it returns a truthy value or the deadline passes. */
export async function waitFor(what, fn, { timeoutMs = 30_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
}

function requireBuilt(bin) {
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run "npm run build" in interop/ first`);
  }
}

/**
 * Starts toolgate with a configuration made from servers (the tools.servers
 * list, as YAML text) and optional extra YAML. Resolves once every upstream
 * is ready.
 */
export async function startToolgate({ servers, profiles, agentName = 'interop-agent', extraYAML = '', env = {}, expectReady = true }) {
  requireBuilt(toolgateBin);
  const port = await freePort();
  const adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'toolgate-interop-'));
  const config = `
gateway:
  listen: 127.0.0.1:${port}
admin:
  listen: 127.0.0.1:${adminPort}
  token_env: TG_ADMIN_TOKEN
identity:
  api_keys:
    - agent: ${agentName}
      profile: full
      key_env: TG_AGENT_KEY
    - agent: interop-narrow
      profile: narrow
      key_env: TG_NARROW_KEY
profiles:
${profiles ?? `  full:
    lifetime: 1h
    tools: ["*"]
  narrow:
    lifetime: 1h
    tools: ["everything__echo", "everything__get-sum"]
    out_of_scope: deny`}
store:
  type: memory
tools:
  servers:
${servers}
${extraYAML}
log:
  level: debug
  format: text
`;
  const configPath = join(dir, 'toolgate.yaml');
  writeFileSync(configPath, config);
  const proc = startProcess(toolgateBin, ['serve', '--config', configPath], {
    cwd: dir,
    env: {
      ...process.env,
      TG_AGENT_KEY: agentKey,
      TG_NARROW_KEY: narrowKey,
      TG_ADMIN_TOKEN: adminToken,
      ...env,
    },
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor('toolgate to serve /healthz with every upstream ready', async () => {
      if (proc.child.exitCode !== null) throw new Error(`toolgate exited: ${proc.output()}`);
      const r = await fetch(`${base}/healthz`);
      if (!r.ok) return false;
      const { upstreams } = await r.json();
      return !expectReady || upstreams.every((u) => u.State === 'ready');
    }, { timeoutMs: 60_000 });
  } catch (err) {
    await proc.stop();
    throw new Error(`${err.message}\n--- toolgate output ---\n${proc.output()}`);
  }
  return {
    base,
    mcpURL: new URL(`${base}/mcp`),
    adminURL: `http://127.0.0.1:${adminPort}`,
    configPath,
    dir,
    output: proc.output,
    stop: proc.stop,
  };
}

/** Calls toolgate's admin API. */
export async function admin(tg, method, path, body) {
  const r = await fetch(`${tg.adminURL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`admin ${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** Starts server-everything over Streamable HTTP; resolves with its URL. */
export async function startEverythingHTTP() {
  const port = await freePort();
  const proc = startProcess(process.execPath, [everythingEntry, 'streamableHttp'], {
    env: { ...process.env, PORT: String(port) },
  });
  const url = `http://127.0.0.1:${port}/mcp`;
  await waitFor('server-everything to listen', async () => {
    if (proc.child.exitCode !== null) throw new Error(`server-everything exited: ${proc.output()}`);
    // Any HTTP answer means it listens.
    await fetch(url, { method: 'GET' });
    return true;
  });
  return { url, ...proc };
}

/** Starts the mcp-go conformance fixture; resolves with its URL. */
export async function startFixture() {
  requireBuilt(fixtureBin);
  const port = await freePort();
  const proc = startProcess(fixtureBin, [], { env: { ...process.env, CONFORMANCE_ADDR: `127.0.0.1:${port}` } });
  const base = `http://127.0.0.1:${port}`;
  await waitFor('the conformance fixture to listen', async () => {
    if (proc.child.exitCode !== null) throw new Error(`fixture exited: ${proc.output()}`);
    return (await fetch(`${base}/health`)).ok;
  });
  return { url: `${base}/mcp`, ...proc };
}

/** YAML for a stdio upstream running a Node script with this Node. */
export function stdioServerYAML(name, script, args = [], extra = '') {
  return `    - name: ${name}
      transport: stdio
      command: ${JSON.stringify(process.execPath)}
      args: ${JSON.stringify([script, ...args])}
      timeout: 30s
${extra}`;
}

/** Writes a file under a fresh temporary folder and returns the folder. */
export function tempDirWith(files) {
  const dir = mkdtempSync(join(tmpdir(), 'toolgate-interop-data-'));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}
