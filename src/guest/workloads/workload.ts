/** What a workload is to the guest worker: steps of deterministic work over the guest's OS. */
import type { GuestMemory } from '../memory.ts';
import type { Interceptor } from '../../storage/interceptor.ts';
import type { Rng } from '../../util/rng.ts';
import type { GuestOs } from './guest-os.ts';
import type { DiskLayout } from './disk-layout.ts';
import type { HeapKind } from './heap.ts';

export interface WorkloadOptions {
  seed: number;
  /** Anonymous memory rewritten per second by `dirty` (bytes). */
  dirtyRate?: number;
  /** Blocks written per second by `diskwrite` (bytes). */
  writeRate?: number;
  /** Bytes of each heap write by `dirty` (default: the whole page). */
  writeSize?: number;
  /** What heap pages hold (default random: mostly random bytes, a third text-like). */
  heap?: HeapKind;
}

export interface WorkloadContext {
  memory: GuestMemory;
  disk: Interceptor;
  os: GuestOs;
  rng: Rng;
  layout: DiskLayout;
  options: WorkloadOptions;
}

export interface Workload {
  readonly name: string;
  /**
   * Does one step of work. Returns the period the step stands for in ms: the
   * worker sleeps out the rest, so rates hold; 0 means "as fast as possible" (warm-up).
   */
  step(): Promise<number>;
  /** Workload-specific state for the device state (JSON). */
  state(): Record<string, unknown>;
  /** Progress for `livemig status`. */
  status(): Record<string, unknown>;
}

export type WorkloadFactory = (ctx: WorkloadContext, saved?: Record<string, unknown>) => Workload;
