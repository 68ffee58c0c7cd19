/** An NBD export through livemig's own client (any server: nbdkit, qemu-nbd, nbd-server, ours). */
import { NbdClient, type NbdClientOptions } from '../../nbd/index.ts';
import type { BlockBackend } from './backend.ts';

export class NbdBackend implements BlockBackend {
  private constructor(readonly client: NbdClient) {}

  static async open(uri: string, opts: NbdClientOptions = {}): Promise<NbdBackend> {
    return new NbdBackend(await NbdClient.connect(uri, opts));
  }

  get size(): number { return this.client.size; }
  get readOnly(): boolean { return this.client.readOnly; }
  get description(): string { return this.client.uri; }

  readInto(target: Uint8Array, offset: number): Promise<void> { return this.client.readInto(target, offset); }
  write(data: Uint8Array, offset: number): Promise<void> { return this.client.write(offset, data); }
  async flush(): Promise<void> {
    if (this.client.canFlush) await this.client.flush();
  }
  close(): Promise<void> { return this.client.close(); }
}
