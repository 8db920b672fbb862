import net from 'node:net';

/**
 * Ports are chosen below Linux's ephemeral range (32768–60999 by default):
 * a port the kernel hands out there, to a server listening on port 0 or to
 * a client connection's own end (every connection to PostgreSQL or a
 * simulator takes one), may be taken between this check and the caller's
 * listen. A CI run failed so: `listen EADDRINUSE 127.0.0.1:36943`. Here only
 * another caller of this function can take it, and it picks at random
 * among twelve thousand.
 */
const LOW = 20_000;
const HIGH = 32_000;

function tryListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A TCP port that was free a moment ago on loopback, outside the range the kernel hands out by itself. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 100; tries++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free port found between ${LOW} and ${HIGH}`);
}
