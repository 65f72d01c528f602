/**
 * What both entries export besides `connect`: types, errors, helpers.
 * Everything here is browser-safe.
 */
export type { ConnectOptions, Role, TransportName, ProtocolChoice, AttachMode } from './options.js';
export type { MailboxConnection, MailboxEvents, ReconnectingInfo, ReconnectedInfo, DialInfo } from './connection.js';
export { RESUME_GRACE_MS, RESUME_MAX_BACKOFF_MS, MAX_REDIRECT_HOPS } from './connection.js';
export { forgetLookupSupport, LOOKUP_MISSING_RECHECK_MS, type RelayVia } from './relay-finder.js';
export { sessionRoute } from '../wire/route.js';
export { HashmailClientError, SessionNotFound, SessionInUse, UnsupportedVersion, ConnectionLost, RelayMoved, StatusCode } from './errors.js';
export { Backoff, INITIAL_BACKOFF_MS, MAX_BACKOFF_MS, BACKOFF_MULTIPLIER, type BackoffOptions } from './backoff.js';
export {
  decodePhrase,
  encodeConnectionPhrase,
  entropyToSids,
  entropyToWords,
  newPhraseEntropy,
  parseMailbox,
  phraseToEntropy,
  phraseToSids,
  wordsToEntropy,
  PhraseError,
  KNOWN_PHRASE_VERSIONS,
  MAX_MAILBOXES,
  PHRASE_SCHEME,
  PHRASE_VERSION,
  type DecodedPhrase,
  type EncodeOptions,
  type PhraseErrorCode,
  type PhraseSids,
} from './phrase.js';
export { flipSid, SID_BYTES } from './bytes.js';
export { forgetNegotiatedProtocols, V2_MISSING_RECHECK_MS } from './negotiate.js';
