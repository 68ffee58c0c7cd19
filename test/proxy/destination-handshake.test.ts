/**
 * The destination proxy's handshake against a scripted source (real sockets, a file
 * for the disk, a listening socket standing for QEMU's -incoming): the key comes from
 * the TLS session and a HELLO carrying one there is refused; a plain HELLO must carry
 * one; a source that sends ERROR and closes while this side prepares fails it with
 * its own reason, never "link closed".
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { LivemigError } from '../../src/errors.ts';
import { runDestinationProxy, type Endpoint } from '../../src/proxy/index.ts';
import {
  PAGE_SIZE, PROTOCOL_NAME, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, QEMU_PROXY_CAPABILITIES, QEMU_STREAM_FORMAT, STREAM_KIND_QEMU,
  connectLink, loadLinkSecurity, type Channel, type Hello, type LinkSecurity,
} from '../../src/wire/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { makePskFile } from '../helpers/tls-creds.ts';

const dir = tempDir('livemig-proxy-hs-');
after(() => dir.cleanup());
const disk = join(dir.path, 'disk.img');
writeFileSync(disk, Buffer.alloc(1 << 20));
const pskFile = makePskFile(join(dir.path, 'keys.psk'), { livemig: randomBytes(32) });
const hasCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof LivemigError && e.code === code && (!message || message.test(e.message));

function hello(key?: Buffer): Hello {
  return {
    protocol: PROTOCOL_NAME, versionMin: PROTOCOL_VERSION_MIN, versionMax: PROTOCOL_VERSION, capabilities: [...QEMU_PROXY_CAPABILITIES],
    guest: { name: 'qemu', workload: 'qemu', options: {}, memoryBytes: 16 * PAGE_SIZE, pageSize: PAGE_SIZE, regions: [{ firstPage: 0, pages: 16 }] },
    storage: { spec: disk, description: 'file', size: 1 << 20, sample: [] } as unknown as Hello['storage'],
    ...(key ? { key: key.toString('hex') } : {}),
    strategy: 'p2b',
    stream: { kind: STREAM_KIND_QEMU, format: QEMU_STREAM_FORMAT, ramBlocks: [{ id: 'pc.ram', bytes: 16 * PAGE_SIZE }] },
  };
}

/** A destination proxy feeding a socket that stands for QEMU; `script` plays the source on the link. */
async function against(security: LinkSecurity | null, script: (c: Channel) => Promise<void>): Promise<unknown> {
  const qemuPath = join(dir.path, `qemu-${randomBytes(4).toString('hex')}.sock`);
  const qemu = net.createServer((s) => s.on('error', () => {}).resume());
  qemu.listen(qemuPath);
  await once(qemu, 'listening');
  let listening!: (e: Endpoint) => void;
  const at = new Promise<Endpoint>((r) => (listening = r));
  const run = runDestinationProxy({
    listen: { transport: 'tcp', host: '127.0.0.1', port: 0 }, security, to: { transport: 'unix', path: qemuPath }, disk,
    windowBytes: 1 << 20, log: pino({ level: 'silent' }), onListening: listening,
  });
  run.catch(() => {});
  try {
    const link = await connectLink(await at, security ? loadLinkSecurity({ tlsPsk: pskFile }, 'client') : null);
    await script(link.channel);
    return await run.then(() => assert.fail('the destination proxy should fail'), (e: unknown) => e);
  } finally {
    qemu.close();
  }
}

test('under TLS a HELLO carrying a key is refused (the key is the session\'s); on a plain link a HELLO without one is', async () => {
  const security = loadLinkSecurity({ tlsPsk: pskFile }, 'server');
  const tls = await against(security, (c) => c.send({ name: 'HELLO', body: hello(randomBytes(32)) }));
  assert.ok(hasCode('MIGRATE_PROTOCOL', /HELLO carries a key on a TLS link/)(tls), String(tls));
  const plain = await against(null, (c) => c.send({ name: 'HELLO', body: hello() }));
  assert.ok(hasCode('MIGRATE_PROTOCOL', /HELLO carries no key on a link without TLS/)(plain), String(plain));
});

test('a source that sends ERROR and closes right after HELLO fails the destination proxy with its reason, not MIGRATE_LINK_LOST', async () => {
  const err = await against(null, async (c) => {
    await c.send({ name: 'HELLO', body: hello(randomBytes(32)) });
    await c.send({ name: 'ERROR', body: { code: 'QEMU_STREAM_UNSUPPORTED', message: 'compressed page' } });
    c.close();
  });
  assert.ok(hasCode('QEMU_STREAM_UNSUPPORTED', /^source proxy: compressed page$/)(err), String(err));
});
