/** A promise with its settle functions, for phases that wait on events another part of the session causes. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  settled: boolean;
}

export function deferred<T>(): Deferred<T> {
  const d = { settled: false } as Deferred<T>;
  d.promise = new Promise<T>((resolve, reject) => {
    d.resolve = (v) => ((d.settled = true), resolve(v));
    d.reject = (e) => ((d.settled = true), reject(e));
  });
  d.promise.catch(() => {}); // a rejection nobody awaits yet is not unhandled: the phase that awaits it sees it
  return d;
}

/** Rejects with `make()` after `ms` (the timer does not keep the process alive). */
export function timeout(ms: number, make: () => Error): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(make()), ms).unref());
}
