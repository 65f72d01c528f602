/**
 * The `grpc-message` header as the gRPC HTTP/2 spec writes it: UTF-8 bytes,
 * with every byte outside printable ASCII (0x20-0x7E) and '%' itself
 * percent-encoded, and nothing else. `encodeURIComponent` is not that: it
 * also escapes ':' and '(', which grpc-js clients (decodeURI) then show
 * verbatim ("limit reached%3A ..."). grpc-js writes its own trailers; this is
 * for the answers we write on a raw HTTP/2 stream.
 */

const PRINTABLE_FIRST = 0x20;
const PRINTABLE_LAST = 0x7e;
const PERCENT = 0x25;
const utf8 = new TextEncoder();

export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of utf8.encode(text)) {
    out +=
      byte >= PRINTABLE_FIRST && byte <= PRINTABLE_LAST && byte !== PERCENT
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
