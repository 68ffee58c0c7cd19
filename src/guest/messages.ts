/** The messages between the engine (main thread) and the guest worker. */
import type { SharedMemory } from './memory.ts';
import type { SharedP2b } from '../p2b/map.ts';
import type { WorkloadOptions } from './workloads/workload.ts';
import type { GuestOsState } from './workloads/guest-os.ts';
import type { InterceptorStats } from '../storage/interceptor.ts';

/** Everything needed to continue the workload elsewhere: its generator, its OS, its own state. */
export interface DeviceState {
  /** device-state.ts's DEVICE_STATE_VERSION. */
  version: number;
  workload: string;
  options: WorkloadOptions;
  rng: number[];
  os: GuestOsState;
  workloadState: Record<string, unknown>;
}

export interface WorkerInit {
  memory: SharedMemory;
  p2b: SharedP2b;
  disk: string;
  /** The token the guest's disk connection acquires the disk's lease with (storage/disk-lease.ts). */
  leaseToken: string;
  workload: string;
  options: WorkloadOptions;
  device?: DeviceState;
  /** Start paused (a destination waiting for its memory to arrive). */
  startPaused?: boolean;
  /** Start with no workload and no disk: both come with 'load-device' (a destination started early). */
  deferDevice?: boolean;
}

export type WorkerRequest =
  | { id: number; cmd: 'pause' }
  | { id: number; cmd: 'resume' }
  | { id: number; cmd: 'throttle'; percent: number }
  | { id: number; cmd: 'status' }
  | { id: number; cmd: 'device-state' }
  | { id: number; cmd: 'step'; count: number }
  | { id: number; cmd: 'detach-disk' }
  | { id: number; cmd: 'attach-disk' }
  | { id: number; cmd: 'load-device'; device: DeviceState }
  | { id: number; cmd: 'stop' };

export interface WorkerStatus {
  state: 'running' | 'paused' | 'error';
  throttle: number;
  steps: number;
  workload: Record<string, unknown>;
  disk: InterceptorStats & { description: string; size: number };
  error?: { code: string; message: string };
}

export type WorkerReply =
  | { id: number; ok: true; result?: unknown }
  | { id: number; ok: false; error: { code: string; message: string } };

export type WorkerEvent =
  | { event: 'ready'; diskSize: number; diskDescription: string }
  | { event: 'failed'; error: { code: string; message: string } };
