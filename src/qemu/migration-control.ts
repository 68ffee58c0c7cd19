/**
 * QMP calls that set up, start and watch a QEMU migration, and save guest memory.
 * QEMU's own figures (total-time, downtime, ram.transferred) come back as they are:
 * they are the reference a proxy is measured against.
 */
import { QmpError, type QmpClient } from './qmp.ts';

export interface MigrationInfo {
  status: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: { transferred: number; total: number; normal: number; duplicate: number; 'dirty-sync-count': number; [k: string]: number };
  [k: string]: unknown;
}

const FINAL = new Set(['completed', 'failed', 'cancelled']);

/**
 * Runs a migration command, retrying while QEMU still winds down the previous migration:
 * after a failure query-migrate can read `failed` while its threads (multifd's) are
 * still going, and QEMU refuses new settings until they are gone.
 */
async function whenIdle(qmp: QmpClient, command: string, args: Record<string, unknown>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return void (await qmp.execute(command, args));
    } catch (err) {
      const busy = err instanceof QmpError && /migration process in progress/i.test(err.message);
      if (!busy || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export async function setCapabilities(qmp: QmpClient, caps: Record<string, boolean>): Promise<void> {
  const capabilities = Object.entries(caps).map(([capability, state]) => ({ capability, state }));
  if (capabilities.length) await whenIdle(qmp, 'migrate-set-capabilities', { capabilities });
}

/** migrate-set-parameters, e.g. { 'max-bandwidth': 131072000, 'downtime-limit': 300 }. */
export async function setParameters(qmp: QmpClient, params: Record<string, unknown>): Promise<void> {
  if (Object.keys(params).length) await whenIdle(qmp, 'migrate-set-parameters', params);
}

export async function startMigration(qmp: QmpClient, uri: string): Promise<void> {
  await whenIdle(qmp, 'migrate', { uri });
}

/** Polls query-migrate until the migration completed, failed or was cancelled (or `timeoutMs` passed). */
export async function waitForMigration(qmp: QmpClient, timeoutMs: number, pollMs = 20): Promise<MigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<MigrationInfo>('query-migrate');
    if (FINAL.has(info.status)) return info;
    if (Date.now() > deadline) throw new Error(`migration still ${info.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Polls query-status until the guest is in `state` (e.g. postmigrate, running, inmigrate, paused). */
export async function waitForRunState(qmp: QmpClient, state: string, timeoutMs: number, pollMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await qmp.execute<{ status: string }>('query-status');
    if (s.status === state) return;
    if (Date.now() > deadline) throw new Error(`guest still ${s.status}, not ${state}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Writes guest-physical memory [0, bytes) to `path` (QEMU writes the file itself). */
export async function pmemsave(qmp: QmpClient, bytes: number, path: string): Promise<void> {
  await qmp.execute('pmemsave', { val: 0, size: bytes, filename: path });
}
