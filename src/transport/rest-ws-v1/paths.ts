/**
 * The only paths the legacy gateway serves (spec section 4); anything else is
 * 404. Matching is exact, as grpc-gateway's is.
 */

export const BOX_PATH = '/v1/lightning-node-connect/hashmail';
export const RECEIVE_PATH = `${BOX_PATH}/receive`;
export const SEND_PATH = `${BOX_PATH}/send`;

/** `box`: NewCipherBox (POST) / DelCipherBox (DELETE); `receive` / `send`: the streams. */
export type Route = 'box' | 'receive' | 'send';

export interface Target {
  route: Route | null;
  /** The raw query string, without `?` ('' if none). */
  query: string;
}

/** Splits a request target into its route and query. */
export function parseTarget(url: string | undefined): Target {
  const raw = url ?? '';
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q + 1);
  switch (path) {
    case BOX_PATH:
      return { route: 'box', query };
    case RECEIVE_PATH:
      return { route: 'receive', query };
    case SEND_PATH:
      return { route: 'send', query };
    default:
      return { route: null, query };
  }
}
