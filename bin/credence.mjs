#!/usr/bin/env node
// The `credence` command: runs the TypeScript sources through tsx's loader,
// in this same process (so signals reach Credence directly).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
try {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
  // Let logs flush, then leave even if a stray handle lingers.
  setTimeout(() => process.exit(code), 200).unref();
} catch (err) {
  process.stderr.write(
    `credence: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
}
