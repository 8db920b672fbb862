import pg from 'pg';

/** A statement as a client sends it: text and values, or a named prepared statement ({ name, text, values }). */
export interface SeenStatement {
  text: string;
  values: readonly unknown[];
}

/**
 * A pool whose clients show every statement to `intercept` before running
 * it; the statement fails with the error `intercept` returns, or runs when it
 * returns undefined.
 */
export function interceptingPool(url: string, intercept: (statement: SeenStatement) => Error | undefined, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  const patched = new WeakSet<object>();
  const connect = pool.connect.bind(pool);
  pool.connect = (async () => {
    const client = await connect();
    if (!patched.has(client)) {
      patched.add(client);
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        const config = typeof args[0] === 'string' ? undefined : (args[0] as { text?: unknown; values?: unknown } | null);
        const text = typeof args[0] === 'string' ? args[0] : config?.text;
        const values = Array.isArray(args[1]) ? args[1] : Array.isArray(config?.values) ? config.values : [];
        const error = typeof text === 'string' ? intercept({ text, values }) : undefined;
        return error === undefined ? query(...args) : Promise.reject(error);
      };
    }
    return client;
  }) as typeof pool.connect;
  return pool;
}

/**
 * A pool whose clients fail the statements `failOn` picks (it returns the
 * error to fail with, or undefined to run the statement), as a dying
 * connection or a deadlock would fail them.
 */
export function failingPool(url: string, failOn: (text: string) => Error | undefined, max = 4): pg.Pool {
  return interceptingPool(url, ({ text }) => failOn(text), max);
}
