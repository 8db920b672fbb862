import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import * as campaigns from '../../campaigns/index.ts';
import { DomainError, notFound, validationError } from '../../shared/errors.ts';
import { pageRequest, toPage } from '../../shared/pagination.ts';
import { authenticate, canSeeWorkspace, type Principal } from '../../tenancy/index.ts';
import type { AppDeps } from '../app.ts';
import { actorOf } from '../auth.ts';
import { Id, PageOf, PageQuery } from '../schemas.ts';
import { workspaceScope } from './consent.ts';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([Type.Null(), t]);
const Purpose = Type.Union([Type.Literal('marketing'), Type.Literal('transactional'), Type.Literal('appointment'), Type.Literal('cart_recovery')]);

const Campaign = Type.Object({
  id: Type.String(),
  workspace_id: Type.String(),
  name: Type.String(),
  body: Type.String(),
  purpose: Type.String(),
  audience: Type.Object({ type: Type.String(), id: Type.String() }),
  from: Type.String(),
  scheduled_at: Nullable(Type.String()),
  throttle_mps: Type.Union([Type.Null(), Type.Number()]),
  auto_resume: Type.Boolean(),
  error_threshold: Type.Union([Type.Null(), Type.Number()]),
  status: Type.String(),
  pause_reason: Nullable(Type.String()),
  audience_size: Type.Union([Type.Null(), Type.Integer()]),
  cursor: Type.Integer(),
  created_at: Type.String(),
  started_at: Nullable(Type.String()),
  completed_at: Nullable(Type.String()),
});

function toApi(c: campaigns.CampaignRow) {
  return {
    id: c.id,
    workspace_id: c.workspace_id,
    name: c.name,
    body: c.body_template,
    purpose: c.purpose,
    audience: { type: c.audience_type, id: c.audience_id },
    from: c.from_number,
    scheduled_at: c.scheduled_at?.toISOString() ?? null,
    throttle_mps: c.throttle_mps,
    auto_resume: c.auto_resume,
    error_threshold: c.error_threshold,
    status: c.status,
    pause_reason: c.pause_reason,
    audience_size: c.audience_size,
    cursor: c.cursor,
    created_at: c.created_at.toISOString(),
    started_at: c.started_at?.toISOString() ?? null,
    completed_at: c.completed_at?.toISOString() ?? null,
  };
}

/** A campaign the caller may see (404 otherwise), and the scope to act in. */
async function visible(deps: AppDeps, p: Principal, id: string) {
  const c = await campaigns.findCampaign(deps.db, id);
  if (c === undefined || !canSeeWorkspace(p, c.organization_id, c.workspace_id)) throw notFound('Campaign');
  return { campaign: c, scope: { organizationId: c.organization_id, workspaceId: c.workspace_id } };
}

/** Routes that take nothing: a field or parameter they do not know is a 422, not ignored. */
const NoQuery = Type.Object({}, { additionalProperties: false });
const NoBody = Type.Object({}, { additionalProperties: false });
/** A POST without a body is validated as an empty object. */
const bodyMayBeAbsent = async (request: FastifyRequest): Promise<void> => {
  if (request.body === undefined || request.body === null) request.body = {};
};

async function stillAuthenticated(db: AppDeps['db'], authorization: string | undefined): Promise<boolean> {
  try {
    await authenticate(db, authorization);
    return true;
  } catch (err) {
    if (err instanceof DomainError && err.code === 'unauthenticated') return false;
    throw err;
  }
}

/** An open progress stream's keep-alive comment, this often. */
export const STREAM_HEARTBEAT_MS = 15_000;

export function campaignRoutes(deps: AppDeps): FastifyPluginAsyncTypebox {
  const { db } = deps;
  const Params = Type.Object({ id: Type.String({ maxLength: 64 }) });
  const progressFeed = campaigns.createProgressFeed((c) => campaigns.campaignProgress(db, c));
  return async (app) => {
    app.post(
      '/v1/campaigns',
      {
        schema: {
          tags: ['campaigns'],
          summary: 'Create a campaign (draft). Body placeholders: {{first_name}}, {{first_name|there}}, any contact attribute.',
          querystring: Type.Object({ workspace_id: Type.Optional(Id('ws')) }, { additionalProperties: false }),
          body: Type.Object(
            {
              name: Type.String({ minLength: 1, maxLength: 200 }),
              body: Type.String({ minLength: 1, maxLength: 1600 }),
              audience: Type.Object(
                { type: Type.Union([Type.Literal('list'), Type.Literal('segment')]), id: Type.String({ maxLength: 64 }) },
                { additionalProperties: false },
              ),
              purpose: Type.Optional(Purpose),
              from: Type.Optional(Type.String({ maxLength: 32, description: 'a sender number of the workspace (default: its default sender)' })),
              scheduled_at: Type.Optional(Type.String({ format: 'date-time' })),
              throttle_mps: Type.Optional(Type.Union([Type.Null(), Type.Number({ minimum: 0.01, maximum: 10_000, description: 'messages per second (at least 0.01); below 1, one message every 1/throttle_mps seconds' })])),
              auto_resume: Type.Optional(Type.Boolean({ description: 'resume by itself when credits arrive after it paused for want of them (default true)' })),
              error_threshold: Type.Optional(
                Type.Union([Type.Null(), Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'pause when this share of the last 500 sends failed permanently: refused by the carrier, or reported undelivered or failed' })]),
              ),
            },
            { additionalProperties: false },
          ),
          response: { 201: Campaign },
        },
      },
      async (request, reply) => {
        const actor = actorOf(request);
        const scope = await workspaceScope(db, actor.principal, request.query.workspace_id);
        const c = await campaigns.createCampaign(db, scope, request.body, actor.principal.keyId);
        return reply.code(201).send(toApi(c));
      },
    );

    app.get(
      '/v1/campaigns',
      {
        schema: {
          tags: ['campaigns'],
          summary: 'List campaigns, newest first',
          querystring: Type.Object({ ...PageQuery, workspace_id: Type.Optional(Id('ws')) }, { additionalProperties: false }),
          response: { 200: PageOf(Campaign) },
        },
      },
      async (request) => {
        const p = actorOf(request).principal;
        const scope = await workspaceScope(db, p, request.query.workspace_id ?? (p.scope === 'workspace' ? p.workspaceId : undefined));
        const page = pageRequest(request.query);
        return toPage(await campaigns.listCampaigns(db, scope, page), page, (c) => c.id, toApi);
      },
    );

    app.get(
      '/v1/campaigns/:id',
      {
        schema: {
          tags: ['campaigns'],
          summary: 'One campaign with its lifecycle events',
          params: Params,
          response: { 200: Type.Intersect([Campaign, Type.Object({ events: Type.Array(Type.Unknown()) })]) },
        },
      },
      async (request) => {
        const { campaign } = await visible(deps, actorOf(request).principal, request.params.id);
        const events = await campaigns.campaignEvents(db, campaign.id);
        return { ...toApi(campaign), events: events.map((e) => ({ ...e, at: e.at.toISOString() })) };
      },
    );

    app.post(
      '/v1/campaigns/:id/start',
      {
        preValidation: bodyMayBeAbsent,
        schema: {
          tags: ['campaigns'],
          summary:
            'Start, or schedule if scheduled_at is ahead (a second start of a scheduled campaign is a 409, as a retry must not send it early); `now: true` starts a draft or a scheduled campaign at once. The audience is snapshotted into numbered recipients',
          params: Params,
          querystring: NoQuery,
          body: Type.Object({ now: Type.Optional(Type.Boolean({ description: 'start at once, whatever scheduled_at says' })) }, { additionalProperties: false }),
          response: { 200: Campaign },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        const { scope } = await visible(deps, actor.principal, request.params.id);
        return toApi(await campaigns.startCampaign(db, scope, request.params.id, actor.principal.keyId, { now: request.body.now === true }));
      },
    );
    const action = (name: 'pause' | 'resume' | 'cancel', summary: string) =>
      app.post(
        `/v1/campaigns/:id/${name}`,
        {
          preValidation: bodyMayBeAbsent,
          schema: { tags: ['campaigns'], summary, params: Params, querystring: NoQuery, body: NoBody, response: { 200: Campaign } },
        },
        async (request) => {
          const actor = actorOf(request);
          const { scope } = await visible(deps, actor.principal, request.params.id);
          const fn = { pause: campaigns.pauseCampaign, resume: campaigns.resumeCampaign, cancel: campaigns.cancelCampaign }[name];
          return toApi(await fn(db, scope, request.params.id, actor.principal.keyId));
        },
      );
    action('pause', 'Pause: takes effect before the next claim; nothing not yet handed to the carrier is sent');
    action('resume', 'Resume from the message rows: nothing is created or sent twice');
    action('cancel', 'Cancel: everything not yet sent is skipped and its credits released');

    app.post(
      '/v1/campaigns/:id/preview',
      {
        schema: {
          tags: ['campaigns'],
          summary: 'The rendered body for a sample contact (default: the first of the audience), with segments and cost',
          params: Params,
          querystring: NoQuery,
          body: Type.Object({ contact_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })) }, { additionalProperties: false }),
        },
        preValidation: bodyMayBeAbsent,
      },
      async (request) => {
        const { campaign } = await visible(deps, actorOf(request).principal, request.params.id);
        const contact = await campaigns.previewContact(db, campaign, request.body.contact_id);
        if (contact === undefined) {
          throw request.body.contact_id
            ? validationError('contact_id', 'no such contact in this workspace')
            : validationError('contact_id', "the campaign's audience is empty: name a contact to preview for");
        }
        return { contact_id: contact.id, ...(await campaigns.renderFor(db, campaign, contact.variables, contact.phone)) };
      },
    );

    app.get(
      '/v1/campaigns/:id/quote',
      { schema: { tags: ['campaigns'], summary: 'Pre-flight estimate: recipients, segments and credits by country, and how many the balance covers', params: Params } },
      async (request) => {
        const { campaign } = await visible(deps, actorOf(request).principal, request.params.id);
        return campaigns.quoteCampaign(db, campaign);
      },
    );

    app.get(
      '/v1/campaigns/:id/progress',
      { schema: { tags: ['campaigns'], summary: 'Counts by status and skip reason, credits reserved and captured, sends per minute, ETA', params: Params } },
      async (request) => {
        const { campaign } = await visible(deps, actorOf(request).principal, request.params.id);
        return campaigns.campaignProgress(db, campaign);
      },
    );

    // open streams end when the server closes (a graceful shutdown waited for their viewers to leave)
    const streams = new Set<() => void>();
    let shuttingDown = false;
    app.addHook('preClose', async () => {
      shuttingDown = true;
      for (const stop of streams) stop();
    });

    app.get(
      '/v1/campaigns/:id/progress/stream',
      {
        schema: {
          tags: ['campaigns'],
          summary:
            'The same progress as Server-Sent Events (a `progress` event a second, until the campaign ends, the client leaves, the server shuts down, or the key is revoked: then an `end` event; for a very large campaign less often: each update waits ten times as long as counting took, at most 30 s; a `: keep-alive` comment line every 15 s in between, so that proxies do not close an idle stream)',
          params: Params,
        },
      },
      async (request, reply) => {
        const { campaign } = await visible(deps, actorOf(request).principal, request.params.id);
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': request.id });
        // the client may have left already (during the look-up above, before a 'close' listener
        // could hear it): the socket's state says so, whenever it happened
        let closing = false;
        const gone = () => closing || res.destroyed || request.raw.destroyed || res.writableEnded;
        let wake: (() => void) | undefined;
        res.on('close', () => wake?.());
        const stop = () => {
          closing = true;
          wake?.();
        };
        streams.add(stop);
        // a request still in its look-up when the shutdown began was not there to be stopped
        if (shuttingDown) stop();
        // Between updates (up to 30 s for a large campaign, longer while one
        // is counted) the connection would be idle: proxies and load
        // balancers close idle connections, often after 30–60 s. A comment
        // line keeps it open; EventSource clients ignore it.
        const heartbeat = setInterval(() => {
          if (!gone()) res.write(': keep-alive\n\n');
        }, deps.streamHeartbeatMs ?? STREAM_HEARTBEAT_MS);
        const id = campaign.id;
        try {
          for (let n = 0; !gone(); n++) {
            // a key revoked while its viewer watches ends the stream (within the keys' 2 s cache)
            if (n > 0 && !(await stillAuthenticated(db, request.headers.authorization))) {
              res.write(`event: end\ndata: ${JSON.stringify({ reason: 'unauthenticated' })}\n\n`);
              break;
            }
            const current = await campaigns.campaignInScope(db, { organizationId: campaign.organization_id }, id);
            // shared with everyone watching this campaign (in this state) from this process
            const { progress, waitMs } = await progressFeed.next(current);
            if (gone()) break;
            res.write(`id: ${n}\nevent: progress\ndata: ${JSON.stringify(progress)}\n\n`);
            if (current.status === 'completed' || current.status === 'cancelled') break;
            await new Promise<void>((r) => {
              const t = setTimeout(r, waitMs);
              wake = () => {
                clearTimeout(t);
                r();
              };
            });
          }
        } catch (err) {
          // the headers are sent: the stream ends (the client reconnects), the error is logged
          request.log.warn({ err }, 'progress stream ended by an error');
        } finally {
          clearInterval(heartbeat);
          streams.delete(stop);
          // the viewer reconnects to another API process
          if (closing && !res.destroyed && !res.writableEnded) res.write(`event: end\ndata: ${JSON.stringify({ reason: 'shutting_down' })}\n\n`);
          res.end();
        }
      },
    );
  };
}
