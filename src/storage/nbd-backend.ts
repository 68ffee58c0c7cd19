/** An NBD export through livemig's own client (any server: nbdkit, qemu-nbd, nbd-server, ours). */
import { NbdClient, NbdError, type NbdClientOptions } from '../../nbd/index.ts';
import { LivemigError } from '../errors.ts';
import type { BlockBackend } from './backend.ts';

export class NbdBackend implements BlockBackend {
  private constructor(readonly client: NbdClient) {}

  static async open(uri: string, opts: NbdClientOptions = {}): Promise<NbdBackend> {
    const client = await NbdClient.connect(uri, opts).catch((e: unknown) => {
      if (e instanceof NbdError && e.code === 'NBD_LEASE_HELD') throw new LivemigError('GUEST_DISK_LEASED', `${uri}: another guest holds the disk's lease (it was handed over to another host); this copy may not write it`);
      throw e;
    });
    return new NbdBackend(client);
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
