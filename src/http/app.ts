import { randomBytes } from 'node:crypto';
import { AjvCompiler } from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import addFormats from 'ajv-formats';
import Fastify, { type FastifySchemaCompiler } from 'fastify';
import type pg from 'pg';
import type { Carrier } from '../carriers/carrier.ts';
import type { Config } from '../config.ts';
import type { Db } from '../db/db.ts';
import type { Logger } from '../shared/logger.ts';
import { authHook } from './auth.ts';
import { errorHandler, sendProblem, unstorableField } from './problem.ts';
import { creditsRoutes } from './routes/credits.ts';
import { healthRoutes } from './routes/health.ts';
import { messageRoutes } from './routes/messages.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { senderRoutes } from './routes/senders.ts';
import type { BillingDeps } from '../payments/index.ts';
import { billingRoutes } from './routes/billing.ts';
import { campaignRoutes } from './routes/campaigns.ts';
import { consentRoutes } from './routes/consent.ts';
import { contactRoutes } from './routes/contacts.ts';
import { importRoutes } from './routes/imports.ts';
import { privacyRoutes } from './routes/privacy.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { tenancyRoutes } from './routes/tenancy.ts';
import { Problem } from './schemas.ts';

/** Everything the HTTP layer needs, passed in once (no Fastify decorators for services). */
export interface AppDeps {
  config: Pick<Config, 'publicUrl'>;
  db: Db;
  /** The send path's transactions (message intake, status callbacks): generic plans, same pool. */
  pipelineDb: Db;
  pool: pg.Pool;
  log: Logger;
  /** Only webhook verification is needed here; sending happens in the worker. */
  carrier: Pick<Carrier, 'validateWebhook'>;
  /** Flow control of POST /v1/messages (messaging/admission.ts); absent = none. */
  intake?: { backlogLimit: number; backlogWaitMs: number };
  /** Payments (Stripe or its simulator); absent = billing routes answer 503. */
  billing?: BillingDeps;
  /** How often an open progress stream sends a comment line while it waits (default STREAM_HEARTBEAT_MS). */
  streamHeartbeatMs?: number;
}

/**
 * Query strings, path parameters and headers arrive as text: their values
 * are converted to the schema's types (`?limit=5`, `?status=sent` as a
 * one-item array). A JSON body has types of its own, and converting them
 * changed what a client said: `0` or `false` became `null` in a nullable
 * field (an hourly cap of 0 stored as no cap), `true` became the amount 1,
 * `12` the text "12". Bodies are validated as they are, and a wrong type is
 * a 422 naming the field.
 */
const buildAjvValidator = AjvCompiler();
type Compile = FastifySchemaCompiler<unknown>;
const strictBodies: typeof buildAjvValidator = (externalSchemas, options) => {
  // the package's types say a compiler takes a schema; Fastify passes the route's definition
  const converting = buildAjvValidator(externalSchemas, options) as unknown as Compile;
  // our options are Ajv's (never JTD's): only their coerceTypes changes
  const exactOptions = { ...options, customOptions: { ...(options?.customOptions as object), coerceTypes: false } } as typeof options;
  const exact = buildAjvValidator(externalSchemas, exactOptions) as unknown as Compile;
  const select: Compile = (route) => (route.httpPart === 'body' ? exact : converting)(route);
  return select as unknown as ReturnType<typeof buildAjvValidator>;
};

type OpenApiDocument = Record<string, unknown> & { paths?: Record<string, Record<string, Record<string, unknown>>> };

/**
 * What the routes' schemas cannot say, added to the OpenAPI document: every
 * operation's errors (RFC 9457 problem+json, the shared `Problem` schema),
 * the CSV upload of an import, the ledger's CSV export and the progress
 * stream's Server-Sent Events.
 */
function documentErrorsAndMedia(doc: OpenApiDocument): OpenApiDocument {
  const problem = { description: 'A problem (RFC 9457): `errors` names each field and why', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } };
  for (const [path, operations] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(operations)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
      const responses = (op.responses ?? {}) as Record<string, unknown>;
      op.responses = { ...responses, '4XX': responses['4XX'] ?? problem, '5XX': responses['5XX'] ?? problem };
      if (path === '/v1/contacts/imports' && method === 'post') {
        op.requestBody = { required: true, content: { 'text/csv': { schema: { type: 'string', format: 'binary' } } } };
      }
      if (path === '/v1/credits/ledger' && method === 'get') {
        const ok = (responses['200'] ?? {}) as { content?: Record<string, unknown> };
        op.responses = { ...(op.responses as object), '200': { ...ok, description: 'The page (JSON), or every matching entry as CSV with `Accept: text/csv`', content: { ...ok.content, 'text/csv': { schema: { type: 'string' } } } } };
      }
      if (path === '/v1/campaigns/{id}/progress/stream' && method === 'get') {
        op.responses = { ...(op.responses as object), '200': { description: 'Server-Sent Events: `event: progress`, its data the JSON of GET …/progress', content: { 'text/event-stream': { schema: { type: 'string' } } } } };
      }
    }
  }
  return doc;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,100}$/;
// Our own request ids: a random stem per process and a counter (a random id
// per request cost a CSPRNG call on every status callback).
const requestIdStem = randomBytes(6).toString('hex');
let requestCount = 0;

export async function buildApp(deps: AppDeps) {
  const app = Fastify({
    loggerInstance: deps.log,
    // Honour a caller's X-Request-Id when it is sane, so one id follows a request across systems.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID_RE.test(given)
        ? given
        : `req_${requestIdStem}${(++requestCount).toString(36)}`;
    },
    bodyLimit: 1024 * 1024,
    schemaController: { compilersFactory: { buildValidator: strictBodies } },
    ajv: {
      customOptions: {
        allErrors: true,
        coerceTypes: 'array',
        useDefaults: true,
        removeAdditional: false,
      },
      // ajv-formats' types predate Fastify's Ajv plugin type; the runtime shape matches.
      plugins: [addFormats.default as never],
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorateRequest('principal', null);
  app.addSchema(Problem);
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onRequest', authHook(deps.db));
  // Before any route's own validation: a value PostgreSQL could not store is a 422, whichever route.
  app.addHook('preValidation', async (request, reply) => {
    for (const [where, part] of [['body', request.body], ['querystring', request.query], ['params', request.params]] as const) {
      const found = unstorableField(part);
      if (found !== undefined) {
        return sendProblem(reply, request, 'validation_error', {
          detail: `${found.field}: ${found.reason}`,
          fields: [{ field: found.field, in: where, reason: found.reason }],
        });
      }
    }
    return undefined;
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, request, 'not_found', {
      detail: `No route ${request.method} ${request.url.split('?')[0]}`,
    }),
  );

  // The docs UI's own routes and assets are public.
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/docs')) route.config = { ...(route.config ?? {}), public: true };
  });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Credence API',
        version: '0.1.0',
        description:
          'Multi-tenant SMS with prepaid credits. Errors are RFC 9457 application/problem+json. Lists are cursor-paginated, newest first.',
      },
      servers: [{ url: deps.config.publicUrl }],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    // shared schemas are named by their $id in components.schemas (Problem, not def-0)
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    transformObject: (document) => ('openapiObject' in document ? documentErrorsAndMedia(document.openapiObject as OpenApiDocument) : document.swaggerObject),
  });
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } });

  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () =>
    app.swagger(),
  );
  await app.register(healthRoutes(deps));
  await app.register(tenancyRoutes(deps));
  await app.register(creditsRoutes(deps));
  await app.register(metricsRoutes(deps));
  await app.register(messageRoutes(deps));
  await app.register(senderRoutes(deps));
  await app.register(contactRoutes(deps));
  await app.register(importRoutes(deps));
  await app.register(campaignRoutes(deps));
  await app.register(consentRoutes(deps));
  await app.register(privacyRoutes(deps));
  await app.register(billingRoutes(deps));
  await app.register(webhookRoutes(deps));
  return app;
}

export type App = Awaited<ReturnType<typeof buildApp>>;

/**
 * Graceful close: in-flight requests finish, but keep-alive connections
 * (webhook senders, load balancers) are closed as soon as they go idle,
 * rather than holding the shutdown open until their keep-alive timeout.
 */
export async function closeApp(app: App): Promise<void> {
  const timer = setInterval(() => app.server.closeIdleConnections(), 100);
  try {
    await app.close();
  } finally {
    clearInterval(timer);
  }
}
