import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { createStatusCallbackBatcher, handleInbound } from '../../messaging/index.ts';
import type { AppDeps } from '../app.ts';
import { sendProblem } from '../problem.ts';

const EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>';

/**
 * Carrier webhooks. They carry no API key: each is verified with the
 * carrier's signature over our public URL and the form fields; a forged or
 * unsigned one is 403 and changes nothing.
 */
export function webhookRoutes(deps: AppDeps): FastifyPluginAsync {
  return async (app) => {
    // status callbacks are applied in batches, one commit for many (see statusBatch.ts)
    const statusCallbacks = createStatusCallbackBatcher({ db: deps.pipelineDb, log: deps.log });
    app.addHook('onClose', () => statusCallbacks.close());
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
      const params: Record<string, string> = {};
      for (const [k, v] of new URLSearchParams(body as string)) params[k] = v;
      done(null, params);
    });

    const verified = (request: FastifyRequest): Record<string, string> | undefined => {
      const params = (request.body ?? {}) as Record<string, string>;
      const signature = request.headers['x-twilio-signature'];
      const url = `${deps.config.publicUrl}${request.url}`;
      return deps.carrier.validateWebhook(url, params, typeof signature === 'string' ? signature : undefined) ? params : undefined;
    };

    app.post(
      '/webhooks/twilio/status',
      { config: { public: true }, schema: { hide: true } },
      async (request, reply) => {
        const params = verified(request);
        if (params === undefined) return sendProblem(reply, request, 'invalid_signature', { detail: 'X-Twilio-Signature does not match.' });
        const messageId = (request.query as Record<string, string | undefined>).message_id;
        if (messageId === undefined) return reply.code(200).type('text/xml').send(EMPTY_TWIML);
        const result = await statusCallbacks.submit(messageId, params);
        request.log.info({ message_id: messageId, status: params.MessageStatus, result }, 'status callback');
        return reply.code(200).type('text/xml').send(EMPTY_TWIML);
      },
    );

    app.post(
      '/webhooks/twilio/inbound',
      { config: { public: true }, schema: { hide: true } },
      async (request, reply) => {
        const params = verified(request);
        if (params === undefined) return sendProblem(reply, request, 'invalid_signature', { detail: 'X-Twilio-Signature does not match.' });
        const sid = params.MessageSid ?? params.SmsMessageSid;
        if (sid === undefined || params.From === undefined || params.To === undefined) {
          return sendProblem(reply, request, 'validation_error', { detail: 'MessageSid, From and To are required.' });
        }
        const result = await handleInbound(deps, params);
        request.log.info({ provider_sid: sid, result }, 'inbound message');
        return reply.code(200).type('text/xml').send(EMPTY_TWIML);
      },
    );
  };
}
