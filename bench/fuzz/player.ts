/**
 * How a campaign plays one session against its target: the target it armed,
 * the sessions it makes, and the player that sends one and reports how the
 * target took it (campaign.ts judges that).
 */
import type { FuzzSession } from './migration-session.ts';
import { runSession, type SessionOutcome, type ReplyReader } from './connection.ts';
import type { Target } from './targets.ts';
import type { CampaignResult } from './campaign.ts';

export interface Played {
  out: SessionOutcome;
  /** ERROR codes the destination sent. */
  codes: string[];
  /** Why the session failed, beyond what judge() sees in `out` (e.g. an intruder let in). */
  failure?: string;
}

export interface Armed {
  target: Target;
  make: (i: number) => FuzzSession & { requests?: number };
  /** Runs one session against the target. */
  play: (s: FuzzSession, r: CampaignResult) => Promise<Played>;
  health: () => Promise<CampaignResult['health']>;
  /** After the hostile phase, before the health check: what the target made of it. */
  settle?: (r: CampaignResult) => Promise<void>;
}

export interface PlayBounds {
  quietMs: number;
  boundMs: number;
}

/** Plays a session of bytes; `follow` reads the answers (ERROR codes go to `codes`, replies counted into r.answered). */
export function bytesPlayer(target: Target, terminator: Buffer, bounds: PlayBounds, follow: (s: FuzzSession, r: CampaignResult, codes: string[]) => ReplyReader): Armed['play'] {
  return (s, r) => untilNotBusy(() => {
    const codes: string[] = [];
    return runSession(target.port, target.host, s, { ...bounds, terminator }, follow(s, r, codes)).then((out) => ({ out, codes }));
  });
}

/**
 * A destination cleans up after a refused session before it listens again, and
 * tells a peer that comes sooner it is busy: that session is sent again, so that
 * every session counted was read.
 */
async function untilNotBusy<T extends { codes: string[] }>(attempt: () => Promise<T>, tries = 600): Promise<T> {
  for (let i = 1; ; i++) {
    const a = await attempt();
    if (!a.codes.includes('MIGRATE_DESTINATION_BUSY') || i >= tries) return a;
    await new Promise((r) => setTimeout(r, 25));
  }
}

