import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { resumeCampaignsForCredits } from '../../campaigns/index.ts';
import * as credits from '../../credits/index.ts';
import { scheduleDispatch } from '../../messaging/index.ts';
import { DomainError } from '../../shared/errors.ts';
import { parseDateTime } from '../../shared/dates.ts';
import { pageRequest, toPage } from '../../shared/pagination.ts';
import * as tenancy from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf, PageQuery } from '../schemas.ts';

const Balances = Type.Object({
  allowance: Type.Integer(),
  purchased: Type.Integer(),
  available: Type.Integer(),
  reserved: Type.Integer(),
  debt: Type.Integer(),
});

const CreditsView = Type.Object({
  organization_id: Type.String(),
  available: Type.Integer({ description: 'allowance + purchased, spendable now' }),
  reserved: Type.Integer({ description: 'held for messages in flight' }),
  debt: Type.Integer({ description: 'taken back after it was spent; blocks sending until repaid' }),
  allowance: Type.Object({
    available: Type.Integer(),
    reserved: Type.Integer(),
    period: Type.Union([Type.String(), Type.Null()]),
    period_start: Type.Union([Type.String(), Type.Null()]),
  }),
  purchased: Type.Object({ available: Type.Integer(), reserved: Type.Integer() }),
  spent_this_period: Type.Integer(),
  spent_total: Type.Integer(),
  low_balance_threshold: Type.Union([Type.Integer(), Type.Null()]),
  low_balance: Type.Boolean(),
});

const Kind = Type.Unsafe<credits.EntryKind>(Type.String({ enum: [...credits.ENTRY_KINDS] }));
const Entry = Type.Object({
  id: Type.String(),
  seq: Type.Integer(),
  kind: Kind,
  allowance_delta: Type.Integer(),
  purchased_delta: Type.Integer(),
  reserved_allowance_delta: Type.Integer(),
  reserved_purchased_delta: Type.Integer(),
  spent_delta: Type.Integer(),
  debt_delta: Type.Integer(),
  reservation_id: Type.Union([Type.String(), Type.Null()]),
  message_id: Type.Union([Type.String(), Type.Null()]),
  payment_ref: Type.Union([Type.String(), Type.Null()]),
  actor_type: Type.String(),
  actor_id: Type.Union([Type.String(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
  idempotency_key: Type.String(),
  created_at: Type.String(),
});

const CSV_COLUMNS = [
  'seq',
  'id',
  'created_at',
  'kind',
  'allowance_delta',
  'purchased_delta',
  'reserved_allowance_delta',
  'reserved_purchased_delta',
  'spent_delta',
  'debt_delta',
  'reservation_id',
  'message_id',
  'payment_ref',
  'actor_type',
  'actor_id',
  'reason',
  'idempotency_key',
] as const;

function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  const s = String(value);
  // Quote when needed; neutralise spreadsheet formulas in free text.
  const safe = /^[=+\-@]/.test(s) && Number.isNaN(Number(s)) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

/** An operator's grant or adjustment: a trillion credits at most, so balances stay exact integers. */
const OPERATOR_AMOUNT_MAX = 1_000_000_000_000;

const OperatorMoney = Type.Object(
  {
    amount: Type.Integer({ minimum: -OPERATOR_AMOUNT_MAX, maximum: OPERATOR_AMOUNT_MAX, description: 'credits; adjustments are signed' }),
    reason: Type.String({ minLength: 1, maxLength: 500 }),
    // Letters, digits, '_', '.', '-': the ledger derives the keys of an operation's further
    // entries with '#' and ':', and the system's own operations are named with ':' (a key such
    // as "k1#2" collided with the second entry of operation "k1" and was a 500).
    idempotency_key: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.-]+$', description: "letters, digits, '_', '.', '-'" }),
  },
  { additionalProperties: false },
);
const AdjustResult = Type.Object({
  amount: Type.Integer(),
  taken_from_available: Type.Integer(),
  added_to_debt: Type.Integer(),
  debt_repaid: Type.Integer(),
  balances: Balances,
  replayed: Type.Boolean(),
});
const CreditResult = Type.Object({
  credited: Type.Integer(),
  debt_repaid: Type.Integer(),
  balances: Balances,
  replayed: Type.Boolean(),
});

export function creditsRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  return async (app) => {
    app.get(
      '/v1/credits',
      {
        schema: {
          tags: ['credits'],
          summary: "The organization's credit balances by bucket",
          querystring: Type.Object({ organization_id: Type.Optional(Id('org')) }, { additionalProperties: false }),
          response: { 200: CreditsView },
        },
      },
      async (request) => {
        const org = await tenancy.readableOrganization(db, actorOf(request), request.query.organization_id);
        return credits.getCredits(db, org);
      },
    );

    app.put(
      '/v1/credits/settings',
      {
        schema: {
          tags: ['credits'],
          summary: 'Set the low-balance alert threshold (organization admin)',
          body: Type.Object(
            {
              low_balance_threshold: Type.Union([Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), Type.Null()]),
              organization_id: Type.Optional(Id('org')),
            },
            { additionalProperties: false },
          ),
          response: { 200: CreditsView },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        tenancy.requireOrgAdmin(actor.principal, request.body.organization_id);
        const org = await tenancy.readableOrganization(db, actor, request.body.organization_id);
        await db.transaction().execute(async (trx) => {
          await credits.setLowBalanceThreshold(trx, org, request.body.low_balance_threshold);
          await tenancy.recordAudit(trx, actor, {
            action: 'credits.settings',
            organizationId: org,
            targetType: 'organization',
            targetId: org,
            details: { low_balance_threshold: request.body.low_balance_threshold },
          });
        });
        return credits.getCredits(db, org);
      },
    );

    app.get(
      '/v1/credits/ledger',
      {
        schema: {
          tags: ['credits'],
          summary: 'Ledger entries, newest first; `Accept: text/csv` exports every matching entry as CSV',
          querystring: Type.Object(
            {
              ...PageQuery,
              organization_id: Type.Optional(Id('org')),
              kind: Type.Optional(Type.Array(Kind)),
              from: Type.Optional(Type.String({ format: 'date-time' })),
              to: Type.Optional(Type.String({ format: 'date-time' })),
            },
            { additionalProperties: false },
          ),
          response: { 200: PageOf(Entry) },
        },
      },
      async (request, reply) => {
        const q = request.query;
        const org = await tenancy.readableOrganization(db, actorOf(request), q.organization_id);
        const filter: credits.LedgerFilter = {
          ...(q.kind !== undefined && { kinds: q.kind }),
          ...(q.from !== undefined && { from: parseDateTime('from', q.from) }),
          ...(q.to !== undefined && { to: parseDateTime('to', q.to) }),
        };
        if (filter.from && filter.to && filter.from >= filter.to) {
          throw new DomainError('validation_error', 'from must be before to', {
            fields: [{ field: 'from', reason: 'must be before to' }],
          });
        }
        const page = pageRequest(q);
        if ((request.headers.accept ?? '').includes('text/csv')) {
          async function* rows() {
            yield `${CSV_COLUMNS.join(',')}\n`;
            let before: string | undefined;
            for (;;) {
              const batch = await credits.listEntries(db, org, filter, { limit: 1000, before });
              const chunk = batch.slice(0, 1000);
              for (const row of chunk) {
                const v = credits.entryRowToView(row);
                yield `${CSV_COLUMNS.map((c) => csvCell(v[c])).join(',')}\n`;
              }
              if (batch.length <= 1000) return;
              before = String(chunk[chunk.length - 1]!.seq);
            }
          }
          return reply
            .type('text/csv; charset=utf-8')
            .header('content-disposition', `attachment; filename="ledger-${org}.csv"`)
            // A stream instead of the JSON page: the response schema does not apply to it.
            .send(Readable.from(rows()) as never);
        }
        const rows = await credits.listEntries(db, org, filter, page);
        return toPage(rows, page, (r) => String(r.seq), credits.entryRowToView);
      },
    );

    app.get(
      '/v1/credits/alerts',
      {
        schema: {
          tags: ['credits'],
          summary: 'Low-balance alerts, newest first',
          querystring: Type.Object(
            { ...PageQuery, organization_id: Type.Optional(Id('org')) },
            { additionalProperties: false },
          ),
          response: {
            200: PageOf(
              Type.Object({
                id: Type.String(),
                kind: Type.Literal('low_balance'),
                available: Type.Integer(),
                threshold: Type.Integer(),
                created_at: Type.String(),
              }),
            ),
          },
        },
      },
      async (request) => {
        const org = await tenancy.readableOrganization(db, actorOf(request), request.query.organization_id);
        const page = pageRequest(request.query);
        const rows = await credits.listAlerts(db, org, page);
        return toPage(rows, page, (r) => r.id, (r) => r);
      },
    );

    const operatorMoney = (kind: 'adjustments' | 'grants') =>
      app.post(
        `/v1/organizations/:id/credits/${kind}`,
        {
          schema: {
            tags: ['credits', 'operator'],
            summary:
              kind === 'adjustments'
                ? 'Operator credit adjustment (signed; a rollback never makes a balance negative: the rest becomes debt)'
                : 'Operator credit grant (purchased bucket, never expires)',
            params: Type.Object({ id: Id('org') }),
            body: OperatorMoney,
            response: {
              200: kind === 'adjustments' ? AdjustResult : CreditResult,
              201: kind === 'adjustments' ? AdjustResult : CreditResult,
            },
          },
        },
        async (request, reply) => {
          const actor = actorOf(request);
          const op = tenancy.requireOperator(actor.principal);
          const org = await tenancy.readableOrganization(db, actor, request.params.id);
          const { amount, reason, idempotency_key } = request.body;
          const ledgerActor = { type: 'operator' as const, id: op.keyId };
          const result = await db.transaction().execute(async (trx) => {
            const r =
              kind === 'adjustments'
                ? await credits.adjust(trx, { organizationId: org, amount, reason, idempotencyKey: idempotency_key, actor: ledgerActor })
                : await credits.grant(trx, { organizationId: org, amount, reason, idempotencyKey: idempotency_key, actor: ledgerActor });
            if (!r.replayed) {
              // Credits arrived: messages blocked for want of them may go now.
              if (r.balances.available > 0) {
                await resumeCampaignsForCredits(trx, org, `operator:${op.keyId}`);
                await scheduleDispatch(trx, org, { includeBlocked: true });
              }
              await tenancy.recordAudit(trx, actor, {
                action: kind === 'adjustments' ? 'credits.adjust' : 'credits.grant',
                organizationId: org,
                targetType: 'organization',
                targetId: org,
                reason,
                details: { amount, idempotency_key },
              });
            }
            return r;
          });
          return reply.code(result.replayed ? 200 : 201).send(result);
        },
      );
    operatorMoney('adjustments');
    operatorMoney('grants');
  };
}
