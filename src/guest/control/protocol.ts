/**
 * The guest's control socket, like QEMU's monitor: JSON lines over a Unix socket.
 * Request  {"id": 1, "cmd": "status"}            (plus arguments by name)
 * Reply    {"id": 1, "ok": true, "result": {...}} or {"id": 1, "ok": false, "error": {"code", "message"}}
 */
export const CONTROL_COMMANDS = ['status', 'pause', 'resume', 'stop', 'throttle', 'dump-memory', 'fingerprint', 'migrate'] as const;
export type ControlCommand = (typeof CONTROL_COMMANDS)[number];

export interface MigrateArgs {
  to: string; // tcp://HOST:PORT or unix:PATH
  /** Credentials the agent loads (absolute paths): an x509 directory or a PSK file. */
  tlsCreds?: string;
  tlsPsk?: string;
  strategy: 'auto' | 'baseline' | 'p2b';
  maxBandwidth: number;
  downtimeLimitMs: number;
  maxRounds: number;
  converge: 'throttle' | 'abort';
  /** Keep the guest here paused after the switch-over (postmigrate), e.g. to compare memories. */
  keepPaused?: boolean;
  /** The page codecs (migrate/source/page-codecs.ts); defaults: compress auto, a 64 MiB XBZRLE cache. */
  compress?: 'auto' | 'always' | 'off';
  xbzrleCacheBytes?: number;
}

export interface ControlRequest {
  id: number;
  cmd: ControlCommand;
  percent?: number;
  path?: string;
  migrate?: MigrateArgs;
}

export type ControlReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: string; message: string } };
