/** Our own NBD server, in process, on a Unix socket in a temp dir. */
import { join } from 'node:path';
import { NbdServer, FileExport, MemoryExport, type ExportSpec } from '../../nbd/index.ts';

export interface OwnServer {
  server: NbdServer;
  uri: (name?: string) => string;
  socket: string;
  close: () => Promise<void>;
}

export async function startOwnServer(
  dir: string,
  exports: { name?: string; file?: string; memory?: number; readOnly?: boolean }[],
  opts: { maxRequest?: number } = {},
): Promise<OwnServer> {
  const specs: ExportSpec[] = [];
  for (const e of exports) {
    const backend = e.file ? await FileExport.open(e.file, { readOnly: e.readOnly }) : new MemoryExport(e.memory!, e.readOnly);
    specs.push({ name: e.name ?? '', backend });
  }
  const server = new NbdServer(specs, opts);
  const socket = join(dir, `livemig-${Math.random().toString(36).slice(2)}.sock`);
  await server.listen({ transport: 'unix', path: socket });
  return {
    server,
    socket,
    uri: (name = '') => server.uri(name),
    close: async () => {
      await server.close();
      await Promise.all(specs.map((s) => s.backend.close()));
    },
  };
}
