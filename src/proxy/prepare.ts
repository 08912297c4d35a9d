import type { Placement } from '../affinity/policy.js';
import type { ClientChannel, ClientRequest } from './client-channel.js';
import { UNAVAILABLE_HEADERS } from './respond.js';
import { headLimitStatus, LIMIT_MESSAGES } from './client-limits.js';
import type { ForwardingContext } from './context.js';
import { originFormPath, type RequestHead } from './request-head.js';

/** Why a request is answered by the proxy instead of forwarded. */
export interface Refusal {
  readonly status: 400 | 413 | 414 | 431 | 501 | 503;
  readonly message: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const BAD_TARGET: Refusal = { status: 400, message: 'Bad request target' };
const BAD_HOST: Refusal = { status: 400, message: 'Bad Host' };
const BAD_FRAMING: Refusal = { status: 400, message: 'Bad Transfer-Encoding' };
const OTHER_CODING: Refusal = { status: 501, message: 'Transfer codings other than chunked are not supported' };
const NO_BACKEND: Refusal = { status: 503, message: 'No backend is available', headers: UNAVAILABLE_HEADERS };
const OVER_LIMIT: Record<413 | 414 | 431, Refusal> = {
  413: { status: 413, message: LIMIT_MESSAGES[413] },
  414: { status: 414, message: LIMIT_MESSAGES[414] },
  431: { status: 431, message: LIMIT_MESSAGES[431] },
};

/**
 * The first half of every forwarded request, plain or upgrade, HTTP/1.x or HTTP/2: the target
 * reduced to origin form, the head copied and checked (Host, limits), the client placed, the
 * forwarding headers added. Returns the path to send upstream, or why the request must be refused.
 */
export function prepareForward(context: ForwardingContext, req: ClientRequest, channel: ClientChannel, head: RequestHead, placement: Placement): string | Refusal {
  const target = req.url ?? '';
  const path = originFormPath(target);
  if (path === null) return BAD_TARGET;
  head.copy(req.rawHeaders, context.affinityHeader, context.limits.allowUnderscoreHeaders);
  if (!channel.completeHead(head) || head.hostConflicts(target, path)) return BAD_HOST;
  const codings = head.transferCodings();
  if (codings === 'unframed') return BAD_FRAMING;
  // The body would reach the backend without its coding: refused, as nginx does.
  if (codings === 'unsupported') return OTHER_CODING;
  const overLimit = headLimitStatus(req, context.limits, head.contentLength);
  if (overLimit !== 0) return OVER_LIMIT[overLimit];
  context.affinity.place(placement, channel.socket, head, Date.now());
  if (placement.backend === null) return NO_BACKEND;
  head.appendForwarding(channel.socket, context.clients, context.protocol, placement.remappedFrom);
  return path;
}
