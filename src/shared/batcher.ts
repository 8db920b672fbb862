/**
 * Group commit for request handlers: items submitted while earlier batches
 * are being written are gathered and written together, one statement and
 * one commit for many requests. Each submitter is answered when its batch
 * has been written (never before), so an answer still means "recorded".
 *
 * An idle batcher adds no waiting: the first item goes in the next turn of
 * the event loop with whatever else arrived in the same turn. Under load,
 * `maxInFlight` batches are written at once and the next one gathers
 * meanwhile, up to `maxBatch` items.
 */
export type Settled<O> =
  | { value: O }
  | { error: unknown }
  /** Answered later, off the batch: the batch's slot is free as soon as flush returns. */
  | { later: Promise<O> };

export interface Batcher<I, O> {
  submit(item: I): Promise<O>;
  /** Waits until every submitted item has been answered. */
  close(): Promise<void>;
}

interface Entry<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (err: unknown) => void;
}

export function createBatcher<I, O>(
  /** Writes a batch; returns one result per item, in order. Throwing fails the whole batch. */
  flush: (items: readonly I[]) => Promise<readonly Settled<O>[]>,
  options: { maxBatch?: number; maxInFlight?: number } = {},
): Batcher<I, O> {
  const maxBatch = options.maxBatch ?? 500;
  const maxInFlight = options.maxInFlight ?? 2;
  let pending: Entry<I, O>[] = [];
  let scheduled = false;
  const running = new Set<Promise<void>>();

  const write = async (batch: readonly Entry<I, O>[]): Promise<void> => {
    let results: readonly Settled<O>[];
    try {
      results = await flush(batch.map((e) => e.item));
    } catch (err) {
      for (const e of batch) e.reject(err);
      return;
    }
    batch.forEach((e, i) => {
      const r = results[i];
      if (r === undefined) e.reject(new Error('batch flush returned no result for an item'));
      else if ('error' in r) e.reject(r.error);
      else if ('later' in r) r.later.then(e.resolve, e.reject);
      else e.resolve(r.value);
    });
  };

  const pump = (): void => {
    scheduled = false;
    while (pending.length > 0 && running.size < maxInFlight) {
      const batch = pending.slice(0, maxBatch);
      pending = pending.slice(batch.length);
      const run: Promise<void> = write(batch).finally(() => {
        running.delete(run);
        pump();
      });
      running.add(run);
    }
  };

  return {
    submit(item) {
      return new Promise<O>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        if (!scheduled) {
          scheduled = true;
          setImmediate(pump);
        }
      });
    },
    async close() {
      while (running.size > 0 || pending.length > 0) {
        if (running.size === 0) pump();
        await Promise.allSettled([...running]);
      }
    },
  };
}
