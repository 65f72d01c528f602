/**
 * What both entries export besides `connect`: types, errors, helpers.
 * Everything here is browser-safe. Internals (backoff, caches, tunables) are
 * not exported: tests import them from their module files.
 */
export type { ConnectOptions, Role, TransportName, ProtocolChoice, AttachMode } from './options.js';
export type { MailboxConnection, MailboxEvents, ReconnectingInfo, ReconnectedInfo, DialInfo } from './connection.js';
export type { RelayVia } from './relay-finder.js';
export { sessionRoute } from '../wire/route.js';
export {
  HashmailClientError,
  SessionNotFound,
  SessionInUse,
  UnsupportedVersion,
  ConnectionLost,
  RelayMoved,
  ConnectTimeout,
  LinkDropped,
  LivenessTimeout,
  RelayUnreachable,
  MessageTooLarge,
  CertificateMismatch,
  V2HandshakeUnexplained,
  StatusCode,
} from './errors.js';
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
