/**
 * The hosted checkout page a session's `url` points to: what a buyer sees
 * instead of checkout.stripe.com. Two buttons; paying redirects (303) to
 * `success_url` with `{CHECKOUT_SESSION_ID}` filled in, declining expires
 * the session and redirects to `cancel_url`.
 */
import type http from 'node:http';
import { StripeSimError } from './resources.ts';
import type { World } from './world.ts';

const escape = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

function money(minor: number, currency: string): string {
  const digits = ['jpy', 'krw', 'vnd', 'clp', 'isk', 'xof', 'xaf', 'ugx'].includes(currency) ? 0 : 2;
  return `${(minor / 10 ** digits).toFixed(digits)} ${currency.toUpperCase()}`;
}

function html(res: http.ServerResponse, status: number, title: string, body: string): void {
  const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}table{width:100%}td:last-child{text-align:right}form{display:inline}button{font-size:1rem;padding:.5rem 1.25rem;margin:1rem .5rem 0 0}</style>
</head><body><h1>${escape(title)}</h1>
${body}
<p><small>Credence payments simulator — no real money moves.</small></p></body></html>`;
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page) });
  res.end(page);
}

function redirect(res: http.ServerResponse, location: string): void {
  res.writeHead(303, { location, 'content-length': 0 });
  res.end();
}

function render(world: World, res: http.ServerResponse, id: string): void {
  const s = world.store.sessions.get(id);
  if (s === undefined) return html(res, 404, 'Checkout not found', `<p>No such checkout session: <code>${escape(id)}</code></p>`);
  if (s.status !== 'open') return html(res, 200, `Checkout ${s.status}`, `<p>This checkout session is ${escape(s.status)}.</p>`);
  const rows = world
    .lines(s.id)
    .map((l) => {
      const every = l.price.recurring === null ? '' : ' / month';
      return `<tr><td>${escape(l.name)} × ${l.quantity}</td><td>${money(l.price.unit_amount * l.quantity, l.price.currency)}${every}</td></tr>`;
    })
    .join('\n');
  const action = (what: string) => `/pay/${encodeURIComponent(s.id)}/${what}`;
  html(
    res,
    200,
    s.mode === 'subscription' ? 'Subscribe' : 'Pay',
    `<table>${rows}
<tr><th>Total</th><th>${money(s.amount_total, s.currency)}</th></tr></table>
<form method="post" action="${action('pay')}"><button type="submit" name="pay" value="1">Pay ${money(s.amount_total, s.currency)}</button></form>
<form method="post" action="${action('decline')}"><button type="submit" name="decline" value="1">Decline</button></form>`,
  );
}

/** GET /pay/:id, POST /pay/:id/pay, POST /pay/:id/decline. */
export function hostedPage(world: World, req: http.IncomingMessage, res: http.ServerResponse, path: string): void {
  const [, , rawId = '', action, extra] = path.split('/');
  const id = decodeURIComponent(rawId);
  req.resume();
  if (extra !== undefined) return html(res, 404, 'Not found', '');
  if (req.method === 'GET' && action === undefined) return render(world, res, id);
  if (req.method !== 'POST' || (action !== 'pay' && action !== 'decline')) return html(res, 404, 'Not found', '');
  try {
    if (action === 'pay') {
      world.pay(id);
      const s = world.store.sessions.get(id)!;
      if (s.success_url === null) return html(res, 200, 'Payment complete', '<p>Thank you. You can close this page.</p>');
      return redirect(res, s.success_url.replaceAll('{CHECKOUT_SESSION_ID}', s.id));
    }
    const s = world.expire(id);
    if (s.cancel_url === null) return html(res, 200, 'Checkout cancelled', '<p>No payment was taken.</p>');
    return redirect(res, s.cancel_url.replaceAll('{CHECKOUT_SESSION_ID}', s.id));
  } catch (err) {
    if (!(err instanceof StripeSimError)) throw err;
    return html(res, err.status, 'Checkout unavailable', `<p>${escape(err.message)}</p>`);
  }
}
