/**
 * A real TCP hop between a migration's source and destination that decodes every
 * frame as it passes, with the protocol's own codecs (src/wire). A test can count
 * what travelled (frames by name, PAGES entries and pages by encoding), drop a
 * frame or cut the link at a chosen frame, and hold the source's traffic
 * (back-pressure stalls the source mid-migration) and let it go again.
 */
import net from 'node:net';
import { once } from 'node:events';
import { ENCODING, FRAME_BY_TYPE, FRAME_HEADER_BYTES, decodePages } from '../../src/wire/index.ts';

export type Direction = 'toDestination' | 'toSource';
export type Verdict = 'pass' | 'drop' | 'cut';
export type Rule = (dir: Direction, name: string, payload: Buffer) => Verdict;

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
  /** Frame names seen so far, per direction, in order (dropped ones included). */
  seen: Record<Direction, string[]>;
  /** Stops forwarding the source's bytes until release(): the source stalls on back-pressure. */
  hold(): void;
  release(): void;
  close(): void;
}

const bump = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);
const frameName = (type: number) => FRAME_BY_TYPE.get(type)?.name ?? `type ${type}`;

/** Splits a byte stream into frames; `onFrame` gets each whole one (header included). */
function frameParser(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
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
      onFrame(buf.subarray(0, need));
      const rest = buf.subarray(need);
      chunks.splice(0, chunks.length, ...(rest.length ? [rest] : []));
      have = rest.length;
    }
  };
}

function countPages(counts: TapCounts, payload: Buffer): void {
  decodePages(payload, Number.MAX_SAFE_INTEGER, (e) => {
    const enc = ENCODING_NAME.get(e.encoding) ?? `encoding ${e.encoding}`;
    bump(counts.entries, enc);
    bump(counts.pages, enc, 'count' in e ? e.count : 1);
  });
}

export async function startFrameTap(destinationPort: number, rule: Rule = () => 'pass', host = '127.0.0.1'): Promise<FrameTap> {
  const counts: TapCounts = { fromSource: new Map(), fromDestination: new Map(), entries: new Map(), pages: new Map() };
  const seen: Record<Direction, string[]> = { toDestination: [], toSource: [] };
  const sources: net.Socket[] = [];
  const sockets: net.Socket[] = [];
  let held = false;

  /** Forwards whole frames from `from` to `to`, asking `rule` about each. */
  const relay = (from: net.Socket, to: net.Socket, dir: Direction, cut: () => void) => {
    const parse = frameParser((frame) => {
      const name = frameName(frame.readUInt16BE(0));
      const payload = frame.subarray(FRAME_HEADER_BYTES);
      seen[dir].push(name);
      bump(dir === 'toDestination' ? counts.fromSource : counts.fromDestination, name);
      if (dir === 'toDestination' && name === 'PAGES') countPages(counts, payload);
      const verdict = rule(dir, name, payload);
      if (verdict === 'cut') return cut();
      if (verdict === 'pass' && !to.write(frame)) from.pause();
    });
    from.on('data', parse);
    to.on('drain', () => !(held && dir === 'toDestination') && from.resume());
    // A side that closes ends the other once what it sent has gone through (RESUMED must not be cut off).
    from.on('close', () => to.end());
  };

  const server = net.createServer((source) => {
    const destination = net.connect(destinationPort, host);
    sources.push(source);
    sockets.push(source, destination);
    const cut = () => (source.destroy(), destination.destroy());
    for (const s of [source, destination]) s.on('error', () => {});
    relay(source, destination, 'toDestination', cut);
    relay(destination, source, 'toSource', cut);
    if (held) source.pause();
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    counts,
    seen,
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
