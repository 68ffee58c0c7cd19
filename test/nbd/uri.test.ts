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

test('nbds:// and nbds+unix:// carry libnbd\'s TLS parameters; the user part names the PSK identity', () => {
  assert.deepEqual(parseNbdUri('nbds://alice@h:99/e?tls-psk-file=/k.psk'), {
    transport: 'tcp', host: 'h', port: 99, exportName: 'e', tls: { pskFile: '/k.psk', username: 'alice' },
  });
  assert.deepEqual(parseNbdUri('nbds+unix:///e?socket=/s&tls-certificates=/pki&tls-hostname=nas&tls-verify-peer=false'), {
    transport: 'unix', socket: '/s', exportName: 'e', tls: { certificates: '/pki', hostname: 'nas', verifyPeer: false },
  });
});

test('TLS URIs without exactly one credential, TLS parameters on nbd://, unknown parameters and foreign schemes are refused', () => {
  const bad = (uri: string, why: RegExp) => assert.throws(() => parseNbdUri(uri), (e: unknown) => e instanceof NbdError && e.code === 'NBD_BAD_URI' && why.test(e.message));
  bad('nbds://h/e', /exactly one of tls-psk-file= and tls-certificates=/);
  bad('nbds://h/e?tls-psk-file=a&tls-certificates=b', /exactly one/);
  bad('nbd://h/e?tls-psk-file=a', /needs a TLS URI/);
  bad('nbd://h/e?timeout=3', /unknown query parameter "timeout"/);
  bad('nbds://h/e?tls-psk-file=a&tls-verify-peer=maybe', /tls-verify-peer must be true or false/);
  bad('http://h/e', /unsupported URI scheme/);
  bad('disk.img', /not an NBD URI/);
});

test('format and parse round-trip', () => {
  for (const uri of [
    'nbd://127.0.0.1:10809/disk', 'nbd+unix:///x?socket=%2Ftmp%2Fa.sock', 'nbd://[::1]:5/',
    'nbds://alice@h:10809/d?tls-psk-file=%2Fk.psk', 'nbds+unix:///x?socket=%2Fs&tls-certificates=%2Fpki&tls-verify-peer=false',
  ]) {
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
