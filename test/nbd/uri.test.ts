import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNbdUri, formatNbdUri, NbdError, parseListenAddress } from '../../nbd/index.ts';

test('nbd:// URIs give host, port (default 10809) and export name', () => {
  assert.deepEqual(parseNbdUri('nbd://example.com/disk'), { transport: 'tcp', host: 'example.com', port: 10809, exportName: 'disk' });
  assert.deepEqual(parseNbdUri('nbd://127.0.0.1:1234'), { transport: 'tcp', host: '127.0.0.1', port: 1234, exportName: '' });
  assert.deepEqual(parseNbdUri('nbd://[::1]:99/a%20b'), { transport: 'tcp', host: '::1', port: 99, exportName: 'a b' });
});

test('nbd+unix:// URIs need ?socket= and no host', () => {
  assert.deepEqual(parseNbdUri('nbd+unix:///vm1?socket=/run/nbd.sock'), { transport: 'unix', socket: '/run/nbd.sock', exportName: 'vm1' });
  assert.deepEqual(parseNbdUri('nbd+unix://?socket=/s'), { transport: 'unix', socket: '/s', exportName: '' });
  assert.throws(() => parseNbdUri('nbd+unix:///vm1'), (e: unknown) => e instanceof NbdError && e.code === 'NBD_BAD_URI');
});

test('TLS and foreign schemes are refused with a reason', () => {
  assert.throws(() => parseNbdUri('nbds://h/e'), /TLS/);
  assert.throws(() => parseNbdUri('http://h/e'), /unsupported URI scheme/);
  assert.throws(() => parseNbdUri('disk.img'), /not an NBD URI/);
});

test('format and parse round-trip', () => {
  for (const uri of ['nbd://127.0.0.1:10809/disk', 'nbd+unix:///x?socket=%2Ftmp%2Fa.sock', 'nbd://[::1]:5/']) {
    assert.equal(formatNbdUri(parseNbdUri(uri)), uri);
  }
});

test('listen addresses: tcp://HOST:PORT and unix:PATH', () => {
  assert.deepEqual(parseListenAddress('tcp://0.0.0.0:10809'), { transport: 'tcp', host: '0.0.0.0', port: 10809 });
  assert.deepEqual(parseListenAddress('tcp://[::1]:0'), { transport: 'tcp', host: '::1', port: 0 });
  assert.deepEqual(parseListenAddress('unix:/tmp/x.sock'), { transport: 'unix', path: '/tmp/x.sock' });
  assert.throws(() => parseListenAddress('10809'), /expected tcp:\/\/HOST:PORT or unix:PATH/);
  assert.throws(() => parseListenAddress('tcp://h:70000'), /out of range/);
});
