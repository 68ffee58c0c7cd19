/**
 * References measured in the same run as what they judge: one raw Node TCP socket
 * between two processes, and nbdcopy reading an export.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

/** Bytes/s one Node TCP socket carries on loopback, sender and receiver in separate processes. */
export async function rawSocketRate(bytes: number): Promise<number> {
  const sink = spawn(process.execPath, ['-e', `
    const s = require('net').createServer((c) => { let n = 0; c.on('data', (d) => { n += d.length; if (n >= ${bytes}) c.end('x'); }); });
    s.listen(0, '127.0.0.1', () => console.log(s.address().port));`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(createInterface({ input: sink.stdout! }), 'line')) as [string];
    const socket = net.connect(Number(line), '127.0.0.1');
    await once(socket, 'connect');
    const chunk = Buffer.alloc(1 << 20, 1);
    const t0 = performance.now();
    const done = once(socket, 'data');
    for (let sent = 0; sent < bytes; sent += chunk.length) {
      if (!socket.write(sent + chunk.length <= bytes ? chunk : chunk.subarray(0, bytes - sent))) await once(socket, 'drain');
    }
    await done;
    const rate = bytes / ((performance.now() - t0) / 1000);
    socket.destroy();
    return rate;
  } finally {
    sink.kill();
  }
}

/** Bytes/s nbdcopy reads an export at (to null:), run as `wrap` says (e.g. inside a namespace). */
export async function nbdcopyRate(uri: string, bytes: number, wrap: string[] = []): Promise<number> {
  const command = [...wrap, 'nbdcopy', uri, 'null:'];
  const t0 = performance.now();
  const p = spawn(command[0], command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  const [code] = (await once(p, 'exit')) as [number];
  if (code !== 0) throw new Error(`nbdcopy ${uri} failed: ${err.trim()}`);
  return bytes / ((performance.now() - t0) / 1000);
}
