/**
 * The guest's lease on an NBD disk served by a server that grants leases
 * (`livemig nbd serve`, docs/nbd.md): the storage itself lets one guest write.
 * File disks and servers without leases have none (null): there flock, or
 * nothing, keeps two writers apart.
 */
import { NbdClient, LEASE_OP, isNbdUri } from '../../nbd/index.ts';

/** Who holds a lease at which epoch: what HELLO carries from the source. */
export interface DiskLease {
  token: string;
  epoch: number;
}

/** The holder and epoch of the disk's lease; null for a file disk or a server without leases. */
export async function queryLease(spec: string): Promise<{ holder: string | null; epoch: number } | null> {
  if (!isNbdUri(spec)) return null;
  const s = await NbdClient.leaseCall(spec, { op: LEASE_OP.QUERY });
  return s && { holder: s.holder, epoch: s.epoch };
}

/** Moves the lease from `from` (at its epoch) to `to` in one step; the state after, or null without leases. */
export async function handOverLease(spec: string, from: DiskLease, to: string): Promise<{ granted: boolean; holder: string | null; epoch: number } | null> {
  if (!isNbdUri(spec)) return null;
  return NbdClient.leaseCall(spec, { op: LEASE_OP.HANDOVER, token: from.token, epoch: from.epoch, to });
}
