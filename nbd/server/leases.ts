/**
 * The leases a server grants: per export, one holder token and an epoch that
 * grows with every change (nbd/lease.ts has the option's encoding). Held in this
 * process's memory: they end with the server, and a server that shares its exports
 * between worker processes does not offer them (docs/nbd.md, "Leases").
 * Each operation is one synchronous step on the event loop, hence atomic.
 */
import { LEASE_OP, type LeaseRequest, type LeaseState } from '../lease.ts';

interface Lease {
  holder: string | null;
  epoch: number;
}

export class Leases {
  private readonly byExport = new Map<string, Lease>();

  private lease(name: string): Lease {
    let l = this.byExport.get(name);
    if (!l) this.byExport.set(name, (l = { holder: null, epoch: 0 }));
    return l;
  }

  /** The holder of an export's lease, or null: then any client may write. */
  holder(exportName: string): string | null {
    return this.byExport.get(exportName)?.holder ?? null;
  }

  apply(r: LeaseRequest): LeaseState {
    const l = this.lease(r.exportName);
    const state = (granted: boolean): LeaseState => ({ granted, holder: l.holder, epoch: l.epoch });
    switch (r.op) {
      case LEASE_OP.QUERY:
        return state(true);
      case LEASE_OP.ACQUIRE:
        if (r.token === '' || (l.holder !== null && l.holder !== r.token)) return state(false);
        // A holder that connects again renews: a handover prepared at the old epoch fails from now on.
        l.holder = r.token;
        l.epoch++;
        return state(true);
      case LEASE_OP.HANDOVER:
        if (r.to === '' || l.holder !== r.token || l.epoch !== r.epoch) return state(false);
        l.holder = r.to;
        l.epoch++;
        return state(true);
      case LEASE_OP.RELEASE:
        if (l.holder === null || l.holder !== r.token) return state(false);
        l.holder = null;
        l.epoch++;
        return state(true);
    }
  }
}
