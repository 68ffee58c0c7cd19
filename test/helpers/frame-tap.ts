/**
 * A real TCP hop between a source and a destination that decodes every frame as
 * it passes, with the protocol's own codecs (src/wire), so a test can count what
 * travelled: frames by name, PAGES entries and pages by encoding. It can also
 * hold the source's traffic (back-pressure stalls the source mid-migration)
 * and let it go again.
 */
import net from 'node:net';
import { once } from 'node:events';
import { ENCODING, FRAME_BY_TYPE, FRAME_HEADER_BYTES, decodePages } from '../../src/wire/index.ts';

const ENCODING_NAME = new Map<number, string>(Object.entries(ENCODING).map(([name, n]) => [n, name]));

export interface TapCounts {
  /** Frames by name, per direction. */
  fromSource: Map<string, number>;
  fromDestination: Map<string, number>;
  /** PAGES entries by encoding name (FULL, ZERO, REF, REF_RUN), and the pages they carry. */
  entries: Map<string, number>;
  pages: Map<string, number>;
}

export interface FrameTap {
  port: number;
  counts: TapCounts;
  /** Stops forwarding the source's bytes until release(): the source stalls on back-pressure. */
  hold(): void;
  release(): void;
  close(): void;
}

const bump = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);

/** Splits a byte stream into frames; `onFrame` gets each whole one. */
function frameParser(onFrame: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  const chunks: Buffer[] = [];
  let have = 0;
  return (chunk) => {
    chunks.push(chunk);
    have += chunk.length;
    while (have >= FRAME_HEADER_BYTES) {
      if (chunks[0].length < FRAME_HEADER_BYTES) chunks.splice(0, chunks.length, Buffer.concat(chunks));
      const need = FRAME_HEADER_BYTES + chunks[0].readUInt32BE(4);
      if (have < need) return; // joined only once the whole frame is here
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      onFrame(buf.readUInt16BE(0), buf.subarray(FRAME_HEADER_BYTES, need));
      const rest = buf.subarray(need);
      chunks.splice(0, chunks.length, ...(rest.length ? [rest] : []));
      have = rest.length;
    }
  };
}

export async function startFrameTap(destinationPort: number, host = '127.0.0.1'): Promise<FrameTap> {
  const counts: TapCounts = { fromSource: new Map(), fromDestination: new Map(), entries: new Map(), pages: new Map() };
  const sources: net.Socket[] = [];
  const sockets: net.Socket[] = [];
  let held = false;
  const name = (type: number) => FRAME_BY_TYPE.get(type)?.name ?? `type ${type}`;
  const countSource = frameParser((type, payload) => {
    bump(counts.fromSource, name(type));
    if (name(type) !== 'PAGES') return;
    decodePages(payload, Number.MAX_SAFE_INTEGER, (e) => {
      const enc = ENCODING_NAME.get(e.encoding) ?? `encoding ${e.encoding}`;
      bump(counts.entries, enc);
      bump(counts.pages, enc, 'count' in e ? e.count : 1);
    });
  });
  const countDestination = frameParser((type) => bump(counts.fromDestination, name(type)));
  const server = net.createServer((source) => {
    const destination = net.connect(destinationPort, host);
    sources.push(source);
    sockets.push(source, destination);
    for (const s of [source, destination]) s.on('error', () => {});
    source.on('data', (d: Buffer) => {
      countSource(d);
      if (!destination.write(d) || held) source.pause();
    });
    destination.on('drain', () => !held && source.resume());
    destination.on('data', (d: Buffer) => {
      countDestination(d);
      if (!source.write(d)) destination.pause();
    });
    source.on('drain', () => destination.resume());
    // A side that ends ends the other once what it sent has gone through (RESUMED must not be cut off).
    source.on('close', () => destination.end());
    destination.on('close', () => source.end());
    if (held) source.pause();
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    counts,
    hold: () => {
      held = true;
      for (const s of sources) s.pause();
    },
    release: () => {
      held = false;
      for (const s of sources) s.resume();
    },
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
