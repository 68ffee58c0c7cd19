/** Runs one build tool to completion; a failure becomes a GuestImageError naming the tool. */
import { spawn } from 'node:child_process';
import { GuestImageError, type GuestImageErrorCode } from './errors.ts';

export interface ToolRun {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  code?: GuestImageErrorCode; // the code a failure gets (a missing program is always GUEST_IMAGE_TOOL)
}

export function runTool(cmd: string, args: string[], opts: ToolRun = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('error', (e: NodeJS.ErrnoException) => {
      const hint = e.code === 'ENOENT' ? ' (not installed: see .ci/run for the packages)' : '';
      reject(new GuestImageError('GUEST_IMAGE_TOOL', `cannot run ${cmd}: ${e.code ?? e.message}${hint}`));
    });
    child.on('close', (status) => {
      if (status === 0) return resolve(Buffer.concat(out).toString());
      const last = err.trim().split('\n').filter((l) => !/^W: /.test(l)).pop() ?? '';
      reject(new GuestImageError(opts.code ?? 'GUEST_IMAGE_TOOL', `${cmd} ${args.join(' ')} failed (exit ${status}): ${last}`));
    });
  });
}
