/**
 * What a backend is doing right now, for the admin API and the status page: in flight, tunnels,
 * and totals the status page turns into rates. A cluster primary sums its workers' figures.
 */
export interface LiveFigures {
  inflight: number;
  websockets: number;
  requests: number;
  errors: number;
  remapsIn: number;
}

export function emptyLiveFigures(): LiveFigures {
  return { inflight: 0, websockets: 0, requests: 0, errors: 0, remapsIn: 0 };
}

/** Adds `figures` into `sum`. */
export function addLiveFigures(sum: LiveFigures, figures: LiveFigures): void {
  sum.inflight += figures.inflight;
  sum.websockets += figures.websockets;
  sum.requests += figures.requests;
  sum.errors += figures.errors;
  sum.remapsIn += figures.remapsIn;
}
