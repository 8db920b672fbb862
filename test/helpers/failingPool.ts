import pg from 'pg';

/**
 * A pool whose clients fail the statements `failOn` picks (it returns the
 * error to fail with, or undefined to run the statement), as a dying
 * connection or a deadlock would fail them. A statement may come as text or
 * as a named prepared statement ({ name, text, values }).
 */
export function failingPool(url: string, failOn: (text: string) => Error | undefined, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  const patched = new WeakSet<object>();
  const connect = pool.connect.bind(pool);
  pool.connect = (async () => {
    const client = await connect();
    if (!patched.has(client)) {
      patched.add(client);
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: unknown } | null)?.text;
        const error = typeof text === 'string' ? failOn(text) : undefined;
        return error === undefined ? query(...args) : Promise.reject(error);
      };
    }
    return client;
  }) as typeof pool.connect;
  return pool;
}
