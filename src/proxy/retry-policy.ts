import { UpstreamConnectError, UpstreamDownError, UpstreamSocketError, type UpstreamError } from '../errors.js';

/** What to do after a forwarding attempt failed. */
export type RetryAction =
  /** Send it again to the same backend on a new connection: most likely a stale keep-alive socket. */
  | 'resend-fresh'
  /**
   * Send it to the client's next backend: it never reached this one, this one failed it twice, or
   * this one was marked down while the request waited for its answer.
   */
  | 'next-backend'
  /** Answer the client with the failure's status. */
  | 'give-up';

/** What the retry decision needs to know about the request and its attempts so far. */
export interface AttemptFacts {
  /** Idempotent method and no body: sending it twice changes nothing (RFC 9110 §9.2.2). */
  replayable: boolean;
  /** Whether the failed connection may have been a reused keep-alive one (a pool's; never a tunnel's). */
  pooled: boolean;
  /** Whether this request was already resent once after a dead socket. */
  resentFresh: boolean;
  /** Attempts made so far, and how many retries the config allows. */
  attempts: number;
  retries: number;
}

/**
 * The one retry classifier for plain requests and upgrades: never sent → any backend may take it;
 * died on a pooled socket before any answer, replayable → once more on a fresh connection to the
 * same backend (the client keeps its pin), then to the next backend, as nginx's
 * proxy_next_upstream does for idempotent requests; withdrawn from a backend marked down (only
 * replayable requests are) → the next backend; anything else → answered.
 */
export function retryAction(failure: UpstreamError, facts: AttemptFacts): RetryAction {
  if (facts.attempts > facts.retries) return 'give-up';
  if (failure instanceof UpstreamConnectError || failure instanceof UpstreamDownError) return 'next-backend';
  if (suspectStaleSocket(failure, facts)) return 'resend-fresh';
  if (failure instanceof UpstreamSocketError && facts.replayable) return 'next-backend';
  return 'give-up';
}

/**
 * Whether a failure speaks to the backend's health. A connection that had served earlier responses
 * and died before answering does not (the backend closed it idle as the request arrived), nor does
 * the first dead pooled socket of a replayable request; a busy queue does not either.
 */
export function countsAgainstBackend(failure: UpstreamError, facts: AttemptFacts): boolean {
  if (!failure.countsAgainstBackend) return false;
  if (failure instanceof UpstreamSocketError && facts.pooled && failure.reusedConnection) return false;
  return !suspectStaleSocket(failure, facts);
}

function suspectStaleSocket(failure: UpstreamError, facts: AttemptFacts): boolean {
  return failure instanceof UpstreamSocketError && facts.replayable && facts.pooled && !facts.resentFresh;
}
