/**
 * Checking request parameters as Stripe does: a missing one is
 * `parameter_missing`, a malformed one `parameter_invalid`, an unknown one
 * `parameter_unknown` (so an adapter cannot rely on a parameter the
 * simulator would silently ignore), each naming the parameter in `param`.
 */
import { bool, type FormObject, type FormValue, integer, list, obj, str } from './form.ts';
import type { RefundInput } from './chargebacks.ts';
import { invalid, type Metadata, missing, noSuch, StripeSimError } from './resources.ts';
import type { SessionInput } from './world.ts';

const unknown = (param: string) => new StripeSimError(400, 'parameter_unknown', `Received unknown parameter: ${param}`, param);

/** Refuse parameters outside `known`; `expand` is accepted everywhere and ignored (ids are returned). */
export function only(form: FormObject, known: readonly string[], prefix = ''): void {
  for (const key of Object.keys(form)) {
    if (key === 'expand' && prefix === '') continue;
    if (!known.includes(key)) throw unknown(prefix === '' ? key : `${prefix}[${key}]`);
  }
}

export function metadata(value: FormValue | undefined, param = 'metadata'): Metadata | undefined {
  if (value === undefined) return undefined;
  if (value === '') return {}; // the SDK writes `metadata: null` as an empty string
  const o = obj(value);
  if (o === undefined) throw invalid(param, `Invalid object: ${param} must be a hash of string keys and values.`);
  const entries = Object.entries(o);
  if (entries.length > 50) throw invalid(param, 'Metadata can have at most 50 keys.');
  const out: Metadata = {};
  for (const [k, v] of entries) {
    if (typeof v !== 'string') throw invalid(`${param}[${k}]`, 'Metadata values must be strings.');
    if (k.length > 40) throw invalid(`${param}[${k}]`, 'Metadata keys can be at most 40 characters long.');
    if (v.length > 500) throw invalid(`${param}[${k}]`, 'Metadata values can be at most 500 characters long.');
    out[k] = v;
  }
  return out;
}

function url(form: FormObject, param: string): string | null {
  const v = str(form[param]);
  if (v === undefined || v === '') return null;
  if (!/^https?:\/\/[^/\s]/.test(v)) throw invalid(param, `Not a valid URL: ${param}`);
  return v;
}

function nested(form: FormObject, param: string, known: readonly string[]): Metadata | null {
  const o = obj(form[param]);
  if (form[param] === undefined) return null;
  if (o === undefined) throw invalid(param, `Invalid object: ${param}`);
  only(o, known, param);
  return metadata(o.metadata, `${param}[metadata]`) ?? null;
}

/** `<at>[price_data][currency]` and `[unit_amount]`, checked as Stripe checks them. */
function priceAmount(data: FormObject, at: string): { currency: string; unitAmount: number } {
  const currency = str(data.currency)?.toLowerCase();
  if (currency === undefined || currency === '') throw missing(`${at}[price_data][currency]`);
  if (!/^[a-z]{3}$/.test(currency)) throw invalid(`${at}[price_data][currency]`, `Invalid currency: ${currency}`);
  if (data.unit_amount === undefined) throw missing(`${at}[price_data][unit_amount]`);
  const unitAmount = integer(data.unit_amount);
  if (unitAmount === undefined) throw invalid(`${at}[price_data][unit_amount]`, `Invalid integer: ${String(str(data.unit_amount))}`);
  return { currency, unitAmount };
}

function lineItem(value: FormValue, i: number, mode: SessionInput['mode']): SessionInput['lines'][number] {
  const at = `line_items[${i}]`;
  const item = obj(value);
  if (item === undefined) throw invalid(at, `Invalid object: ${at}`);
  only(item, ['price', 'price_data', 'quantity'], at);
  const price = str(item.price);
  if (price !== undefined) throw noSuch('price', price, `${at}[price]`); // no catalog: Credence sends price_data inline
  const data = obj(item.price_data);
  if (data === undefined) throw missing(`${at}[price_data]`);
  only(data, ['currency', 'unit_amount', 'product_data', 'recurring'], `${at}[price_data]`);
  const { currency, unitAmount } = priceAmount(data, at);
  const product = obj(data.product_data);
  if (product === undefined) throw missing(`${at}[price_data][product_data]`);
  only(product, ['name', 'description', 'metadata'], `${at}[price_data][product_data]`);
  const name = str(product.name);
  if (name === undefined || name === '') throw missing(`${at}[price_data][product_data][name]`);
  const recurring = data.recurring === undefined ? undefined : obj(data.recurring);
  if (recurring !== undefined) {
    only(recurring, ['interval', 'interval_count'], `${at}[price_data][recurring]`);
    if (str(recurring.interval) !== 'month' || (recurring.interval_count !== undefined && recurring.interval_count !== '1'))
      throw invalid(`${at}[price_data][recurring][interval]`, 'The simulator bills monthly only: recurring[interval]=month.');
  }
  if (mode === 'payment' && recurring !== undefined)
    throw invalid(`${at}[price_data][recurring]`, 'You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.');
  if (mode === 'subscription' && recurring === undefined)
    throw invalid(`${at}[price_data][recurring]`, 'The simulator expects only recurring prices in `subscription` mode.');
  if (item.quantity === undefined) throw missing(`${at}[quantity]`);
  const quantity = integer(item.quantity);
  if (quantity === undefined || quantity < 1) throw invalid(`${at}[quantity]`, 'Quantity must be a positive integer.');
  return { currency, unitAmount, quantity, name, recurring: recurring !== undefined };
}

const SESSION_PARAMS = [
  'mode', 'line_items', 'success_url', 'cancel_url', 'client_reference_id', 'metadata', 'customer', 'customer_email',
  'payment_intent_data', 'subscription_data',
  // Accepted and without effect in the simulator:
  'payment_method_types', 'allowed_payment_method_types', 'locale', 'expires_at', 'allow_promotion_codes', 'billing_address_collection', 'customer_creation', 'submit_type',
] as const;

export function sessionInput(form: FormObject): SessionInput {
  only(form, SESSION_PARAMS);
  const mode = str(form.mode);
  if (mode === undefined || mode === '') throw missing('mode');
  if (mode !== 'payment' && mode !== 'subscription') throw invalid('mode', `Invalid mode: ${mode}; the simulator supports payment and subscription.`);
  const items = list(form.line_items);
  if (items === undefined || items.length === 0) throw missing('line_items');
  const lines = items.map((v, i) => lineItem(v, i, mode));
  if (new Set(lines.map((l) => l.currency)).size > 1) throw invalid('line_items', 'All line items must use the same currency.');
  const customer = str(form.customer) || null;
  const customerEmail = str(form.customer_email) || null;
  if (customer !== null && customerEmail !== null)
    throw new StripeSimError(400, 'parameter_invalid', 'You may only specify one of these parameters: customer, customer_email.', 'customer_email');
  const ref = str(form.client_reference_id) || null;
  if (ref !== null && ref.length > 200) throw invalid('client_reference_id', 'client_reference_id can be at most 200 characters long.');
  if (mode === 'subscription' && form.payment_intent_data !== undefined)
    throw invalid('payment_intent_data', 'You can not pass `payment_intent_data` in `subscription` mode.');
  if (mode === 'payment' && form.subscription_data !== undefined)
    throw invalid('subscription_data', 'You can not pass `subscription_data` in `payment` mode.');
  return {
    mode,
    lines,
    successUrl: url(form, 'success_url'),
    cancelUrl: url(form, 'cancel_url'),
    clientReferenceId: ref,
    metadata: metadata(form.metadata) ?? {},
    customer,
    customerEmail,
    paymentIntentMetadata: nested(form, 'payment_intent_data', ['metadata', 'description']),
    subscriptionMetadata: nested(form, 'subscription_data', ['metadata', 'description']),
  };
}

export function customerInput(form: FormObject) {
  only(form, ['email', 'name', 'metadata', 'description']);
  return { email: str(form.email) || null, name: str(form.name) || null, metadata: metadata(form.metadata) ?? {} };
}

/** A subscription item's new price (`items[i][id]` with `items[i][price_data]`). */
export interface ItemPriceUpdate {
  id: string;
  currency: string;
  product: string;
  unitAmount: number;
}

function itemUpdate(value: FormValue, i: number): ItemPriceUpdate {
  const at = `items[${i}]`;
  const item = obj(value);
  if (item === undefined) throw invalid(at, `Invalid object: ${at}`);
  only(item, ['id', 'price_data'], at);
  const id = str(item.id);
  // the simulator changes existing items' prices; it does not add items
  if (id === undefined || id === '') throw missing(`${at}[id]`);
  const data = obj(item.price_data);
  if (data === undefined) throw missing(`${at}[price_data]`);
  only(data, ['currency', 'product', 'unit_amount', 'recurring'], `${at}[price_data]`);
  const { currency, unitAmount } = priceAmount(data, at);
  const product = str(data.product);
  if (product === undefined || product === '') throw missing(`${at}[price_data][product]`);
  const recurring = obj(data.recurring);
  if (recurring === undefined) throw missing(`${at}[price_data][recurring]`);
  only(recurring, ['interval', 'interval_count'], `${at}[price_data][recurring]`);
  if (str(recurring.interval) !== 'month' || (recurring.interval_count !== undefined && recurring.interval_count !== '1'))
    throw invalid(`${at}[price_data][recurring][interval]`, 'The simulator bills monthly only: recurring[interval]=month.');
  return { id, currency, product, unitAmount };
}

export function subscriptionUpdate(form: FormObject) {
  only(form, ['cancel_at_period_end', 'metadata', 'items', 'proration_behavior']);
  const cancelAtPeriodEnd = form.cancel_at_period_end === undefined ? undefined : bool(form.cancel_at_period_end);
  if (form.cancel_at_period_end !== undefined && cancelAtPeriodEnd === undefined)
    throw invalid('cancel_at_period_end', 'Invalid boolean: cancel_at_period_end');
  let items: ItemPriceUpdate[] | undefined;
  if (form.items !== undefined) {
    const given = list(form.items);
    if (given === undefined) throw invalid('items', 'Invalid array: items');
    items = given.map((v, i) => itemUpdate(v, i));
  }
  const proration = str(form.proration_behavior);
  if (proration !== undefined && !['none', 'create_prorations', 'always_invoice'].includes(proration))
    throw invalid('proration_behavior', `Invalid proration_behavior: ${proration}`);
  // Stripe prorates a price change by default; the simulator does not prorate, so it asks to be told
  if (items !== undefined && proration !== 'none')
    throw invalid('proration_behavior', 'The simulator does not prorate: change prices with proration_behavior=none.');
  // `metadata=''` unsets every key; `metadata[k]=''` unsets one (see mergeMetadata).
  return { cancelAtPeriodEnd, metadata: form.metadata === '' ? null : metadata(form.metadata), items };
}

export function productInput(form: FormObject): { id: string | undefined; name: string; metadata: Metadata } {
  only(form, ['id', 'name', 'metadata']);
  const id = str(form.id);
  if (id !== undefined && !/^[A-Za-z0-9_-]{1,200}$/.test(id)) throw invalid('id', `Invalid product id: ${id}`);
  const name = str(form.name);
  if (name === undefined || name === '') throw missing('name');
  return { id, name, metadata: metadata(form.metadata) ?? {} };
}

export function refundInput(form: FormObject): RefundInput {
  only(form, ['charge', 'payment_intent', 'amount', 'reason', 'metadata']);
  const amount = form.amount === undefined ? undefined : integer(form.amount);
  if (form.amount !== undefined && (amount === undefined || amount < 1)) throw invalid('amount', 'Invalid positive integer');
  const reason = str(form.reason) || undefined;
  if (reason !== undefined && !['duplicate', 'fraudulent', 'requested_by_customer'].includes(reason))
    throw invalid('reason', 'Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer');
  return {
    charge: str(form.charge) || undefined,
    paymentIntent: str(form.payment_intent) || undefined,
    amount,
    reason,
    metadata: metadata(form.metadata),
  };
}

export function invoicePaymentsQuery(form: FormObject): { invoice: string | undefined; status: string | undefined } {
  only(form, ['invoice', 'status', 'limit', 'starting_after', 'ending_before']);
  const status = str(form.status);
  if (status !== undefined && !['open', 'paid', 'canceled'].includes(status)) throw invalid('status', `Invalid status: ${status}`);
  return { invoice: str(form.invoice) || undefined, status };
}
