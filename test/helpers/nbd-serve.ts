/** `livemig nbd serve` as a separate process, the way a user runs it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { LIVEMIG } from './processes.ts';

export interface ServeProcess {
  uri: (name?: string) => string;
  process: ChildProcess;
  /** The --json line the server printed. */
  info: { listening: string; exports: { name: string; uri: string; [k: string]: unknown }[]; pids: number[]; [k: string]: unknown };
  stop: () => Promise<void>;
}

export async function startNbdServe(args: string[]): Promise<ServeProcess> {
  const child = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--listen', 'tcp://127.0.0.1:0', '--json', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const info = JSON.parse(line) as ServeProcess['info'];
  return {
    uri: (name = '') => info.exports.find((e) => e.name === name)!.uri,
    process: child,
    info,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
